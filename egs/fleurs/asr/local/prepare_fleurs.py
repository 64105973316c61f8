#!/usr/bin/env python
"""FLEURS (google/fleurs on the HF hub) Indic configs -> Kaldi data dirs.

Run: python local/prepare_fleurs.py --corpus downloads/fleurs --configs hi_in,ta_in --out data

Expected layout (the dataset repository's own files, as local/download.sh fetches them):
    <corpus>/<config>/<split>.tsv            tab-separated: id, file name, raw transcription, normalised
                                             transcription, characters, number of samples, gender
    <corpus>/<config>/audio/<split>/<file>   16 kHz wav files (unpacked from audio/<split>.tar.gz)
with <split> in train, dev, test. Writes data/<split>_<code> (code = the config's language part, e.g. hi)
with wav.scp, text (the normalised transcription), utt2spk (one speaker per recording: FLEURS has no speaker
ids), spk2utt, utt2lang and utt2gender. Rows whose audio is missing or whose transcript is empty are
reported with their file and line and left out.
"""
from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--configs", default="hi_in,mr_in,bn_in,ta_in,te_in,kn_in")
    parser.add_argument("--out", default="data")
    args = parser.parse_args()
    skipped = 0
    for config in args.configs.split(","):
        code = config.split("_")[0]
        for split in ("train", "dev", "test"):
            tsv = Path(args.corpus) / config / f"{split}.tsv"
            if not tsv.is_file():
                raise SystemExit(f"{tsv}: missing (run the download stage)")
            rows = {}
            for number, line in enumerate(tsv.read_text(encoding="utf-8").splitlines(), 1):
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 7:
                    print(f"skipped: {tsv}:{number}: expected 7 tab-separated fields, got {len(fields)}", file=sys.stderr)
                    skipped += 1
                    continue
                sentence_id, file_name, _raw, text, _chars, _samples, gender = fields
                text = " ".join(unicodedata.normalize("NFC", text).split())
                wav = Path(args.corpus) / config / "audio" / split / file_name
                if not text or not wav.is_file():
                    reason = "empty transcript" if not text else f"audio {wav} not found"
                    print(f"skipped: {tsv}:{number}: {reason}", file=sys.stderr)
                    skipped += 1
                    continue
                utt = f"{code}-{sentence_id}-{Path(file_name).stem}"  # a sentence is read by several speakers
                rows[utt] = (str(wav.resolve()), text, gender.lower())
            out = Path(args.out) / f"{split}_{code}"
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
            print(f"{config} {split}: {len(utts)} utterances", file=sys.stderr)
    if skipped:
        print(f"{skipped} row(s) left out (listed above)", file=sys.stderr)


if __name__ == "__main__":
    main()
