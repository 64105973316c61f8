#!/usr/bin/env python
"""FLEURS (google/fleurs on the HF hub) Indic configs -> Kaldi data dirs, from either of its two forms.

Run: python local/prepare_fleurs.py --corpus downloads/fleurs --configs hi_in,ta_in --out data
     python local/prepare_fleurs.py --hf-data fleurs_hf --configs hi_in,ta_in --out data

--corpus: the dataset repository's own files, as stage 0 of run.sh fetches them:
    <corpus>/<config>/<split>.tsv            tab-separated: id, file name, raw transcription, normalised
                                             transcription, characters, number of samples, gender
    <corpus>/<config>/audio/<split>/<file>   16 kHz wav files (unpacked from audio/<split>.tar.gz)
  with <split> in train, dev, test.
--hf-data: FLEURS as an HF dataset, read with seqattn's dataset reader (seqattn.data.hf_datasets):
    <hf-data>/<config>                       a save_to_disk DatasetDict, or a folder of parquet/arrow files
                                             named by split, with splits train, validation, test and FLEURS's
                                             columns (id, audio, transcription, gender)
  The audio (stored in the dataset as encoded bytes) is written to <out>/audio/<split>_<code>/<utt>.flac, since
  the later stages (KenLM text, scoring, analysis) work on Kaldi data dirs.

Writes data/<split>_<code> (code = the config's language part, e.g. hi; split train, dev, test) with wav.scp,
text (the normalised transcription), utt2spk (one speaker per recording: FLEURS has no speaker ids), spk2utt,
utt2lang and utt2gender. Rows whose audio is missing or unreadable, or whose transcript is empty, are reported
with their file and line (or dataset row) and left out.
"""
from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

SPLITS = {"train": "train", "dev": "validation", "test": "test"}  # Kaldi set -> HF split name


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def rows_from_tsv(corpus: Path, config: str, split: str, code: str) -> tuple[dict, int]:
    """utt -> (audio path, text, gender) from the repository's TSV and unpacked audio; and rows skipped."""
    tsv = corpus / config / f"{split}.tsv"
    if not tsv.is_file():
        raise SystemExit(f"{tsv}: missing (run the download stage)")
    rows, skipped = {}, 0
    for number, line in enumerate(tsv.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.rstrip("\n").split("\t")
        if len(fields) != 7:
            print(f"skipped: {tsv}:{number}: expected 7 tab-separated fields, got {len(fields)}", file=sys.stderr)
            skipped += 1
            continue
        sentence_id, file_name, _raw, text, _chars, _samples, gender = fields
        text = _normalise(text)
        wav = corpus / config / "audio" / split / file_name
        if not text or not wav.is_file():
            reason = "empty transcript" if not text else f"audio {wav} not found"
            print(f"skipped: {tsv}:{number}: {reason}", file=sys.stderr)
            skipped += 1
            continue
        utt = f"{code}-{sentence_id}-{Path(file_name).stem}"  # a sentence is read by several speakers
        rows[utt] = (str(wav.resolve()), text, gender.lower())
    return rows, skipped


def rows_from_dataset(hf_data: Path, config: str, split: str, code: str, out: Path) -> tuple[dict, int]:
    """The same from an HF dataset split, its audio written out as FLAC."""
    import soundfile as sf

    from seqattn.data.audio import AudioError, load_audio
    from seqattn.data.hf_datasets import DatasetSpec, open_dataset, read_dataset

    spec = f"{hf_data / config}?split={SPLITS[split]}&text=transcription"
    utterances = read_dataset(spec, language=code)
    dataset = open_dataset(DatasetSpec.parse(spec))
    ids = [str(value) for value in dataset["id"]] if "id" in dataset.column_names else None
    genders = [str(value).lower() for value in dataset["gender"]] if "gender" in dataset.column_names else None
    audio_dir = out / "audio" / f"{split}_{code}"
    audio_dir.mkdir(parents=True, exist_ok=True)
    rows, skipped = {}, 0
    for row, utt in enumerate(utterances):
        text = _normalise(utt.text or "")
        if not text:
            print(f"skipped: {utt.source}: empty transcript", file=sys.stderr)
            skipped += 1
            continue
        try:
            wave = load_audio(utt.source, 16000)
        except AudioError as error:
            print(f"skipped: {error}", file=sys.stderr)
            skipped += 1
            continue
        name = f"{code}-{ids[row] if ids else 'row'}-{row:06d}"  # a sentence id is shared by its readings
        path = audio_dir / f"{name}.flac"
        sf.write(path, wave.numpy(), 16000, subtype="PCM_16")
        rows[name] = (str(path.resolve()), text, genders[row] if genders else "unknown")
    return rows, skipped


def write_data_dir(out: Path, rows: dict, code: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    utts = sorted(rows)
    tables = {
        "wav.scp": [f"{u} {rows[u][0]}" for u in utts],
        "text": [f"{u} {rows[u][1]}" for u in utts],
        "utt2spk": [f"{u} {u}" for u in utts],
        "spk2utt": [f"{u} {u}" for u in utts],
        "utt2lang": [f"{u} {code}" for u in utts],
        "utt2gender": [f"{u} {rows[u][2]}" for u in utts],
    }
    for name, lines in tables.items():
        (out / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", help="the repository's TSV files and unpacked audio")
    source.add_argument("--hf-data", help="FLEURS as HF datasets, one per config")
    parser.add_argument("--configs", default="hi_in,mr_in,bn_in,ta_in,te_in,kn_in")
    parser.add_argument("--out", default="data")
    args = parser.parse_args()
    out = Path(args.out)
    skipped = 0
    for config in args.configs.split(","):
        code = config.split("_")[0]
        for split in SPLITS:
            if args.hf_data:
                rows, left_out = rows_from_dataset(Path(args.hf_data), config, split, code, out)
            else:
                rows, left_out = rows_from_tsv(Path(args.corpus), config, split, code)
            skipped += left_out
            write_data_dir(out / f"{split}_{code}", rows, code)
            print(f"{config} {split}: {len(rows)} utterances", file=sys.stderr)
    if skipped:
        print(f"{skipped} row(s) left out (listed above)", file=sys.stderr)


if __name__ == "__main__":
    main()
