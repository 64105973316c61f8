#!/usr/bin/env python
"""MUCS 2021 subtask 1 (OpenSLR 103: Hindi, Marathi, Odia) -> Kaldi data dirs.

Run: python local/prepare_mucs.py --corpus downloads/mucs --langs Hindi,Marathi,Odia --out data

Expected layout (as the challenge distributes it; each archive unpacks to one language/split):
    <corpus>/<Language>/<split>/transcription.txt   "<utterance-id> <transcript>" per line
    <corpus>/<Language>/<split>/audio/<utterance-id>.wav
with <split> in train, test. Writes data/{train,dev,test}_<code> (dev: a deterministic --dev-fraction of the
training utterances, chosen by a hash of the id) with wav.scp, text, utt2spk, spk2utt and utt2lang. The corpus
has no speaker labels, so every utterance is its own speaker (Kaldi's convention). Utterances whose audio is
missing or whose transcript is empty are reported and left out.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import unicodedata
from pathlib import Path

CODES = {"Hindi": "hi", "Marathi": "mr", "Odia": "or", "Gujarati": "gu", "Tamil": "ta", "Telugu": "te",
         "Bengali": "bn"}


def write_data_dir(path: Path, rows: list[tuple[str, str, str]], lang: str) -> None:
    """rows: (utt, wav path, text); sorted Kaldi files with one speaker per utterance."""
    path.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows)
    files = {
        "wav.scp": [f"{u} {w}" for u, w, _ in rows],
        "text": [f"{u} {t}" for u, _, t in rows],
        "utt2spk": [f"{u} {u}" for u, _, _ in rows],
        "spk2utt": [f"{u} {u}" for u, _, _ in rows],
        "utt2lang": [f"{u} {lang}" for u, _, _ in rows],
    }
    for name, lines in files.items():
        (path / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_split(split_dir: Path, code: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    transcripts = split_dir / "transcription.txt"
    if not transcripts.is_file():
        raise SystemExit(f"{transcripts}: missing (is the corpus unpacked as <Language>/<split>/?)")
    rows, problems = [], []
    for number, line in enumerate(transcripts.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip().lstrip("\ufeff")
        if not line:
            continue
        utt, _, text = line.partition(" ")
        text = " ".join(unicodedata.normalize("NFC", text).split())
        wav = split_dir / "audio" / f"{utt}.wav"
        if not text:
            problems.append(f"{transcripts}:{number}: empty transcript for {utt}")
        elif not wav.is_file():
            problems.append(f"{transcripts}:{number}: audio {wav} not found")
        else:
            rows.append((f"{code}-{utt}", str(wav.resolve()), text))
    return rows, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--langs", default="Hindi,Marathi,Odia")
    parser.add_argument("--out", default="data")
    parser.add_argument("--dev-fraction", type=float, default=0.05)
    args = parser.parse_args()
    failures = 0
    for language in args.langs.split(","):
        code = CODES[language]
        for split in ("train", "test"):
            rows, problems = read_split(Path(args.corpus) / language / split, code)
            for problem in problems:
                print(f"skipped: {problem}", file=sys.stderr)
            failures += len(problems)
            if split == "train":
                def held_out(utt: str) -> bool:
                    return int(hashlib.sha1(utt.encode()).hexdigest(), 16) % 10_000 < args.dev_fraction * 10_000
                write_data_dir(Path(args.out) / f"dev_{code}", [r for r in rows if held_out(r[0])], code)
                rows = [r for r in rows if not held_out(r[0])]
            write_data_dir(Path(args.out) / f"{split}_{code}", rows, code)
            print(f"{language} {split}: {len(rows)} utterances", file=sys.stderr)
    if failures:
        print(f"{failures} utterance(s) left out (listed above)", file=sys.stderr)


if __name__ == "__main__":
    main()
