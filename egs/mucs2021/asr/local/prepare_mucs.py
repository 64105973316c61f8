#!/usr/bin/env python
"""MUCS 2021 subtask 1 (OpenSLR 103: Hindi, Marathi, Odia) -> Kaldi data dirs.

Run: python local/prepare_mucs.py --corpus downloads/mucs --langs Hindi,Marathi,Odia --out data

Expected layout (as the challenge distributes it; each archive unpacks to one language/split):
    <corpus>/<Language>/<split>/transcription.txt   "<utterance-id> <transcript>" per line
    <corpus>/<Language>/<split>/audio/<utterance-id>.wav
with <split> in train, test. Writes data/{train,dev,test}_<code> (dev: round(--dev-fraction x n) of the n
training utterances, at least one when the fraction is above zero and n >= 2, chosen by a hash of the id so the
split is the same on every run and machine) with wav.scp, text, utt2spk, spk2utt and utt2lang. The corpus
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


def dev_ids(utt_ids: list[str], fraction: float) -> set[str]:
    """The ids held out for dev: the round(fraction x n) ids with the smallest SHA-1 (at least one when
    fraction > 0 and n >= 2, never all of them). A per-id threshold on the hash would give the right fraction
    only on average, and an empty dev set for a small corpus."""
    if fraction <= 0 or len(utt_ids) < 2:
        return set()
    count = min(len(utt_ids) - 1, max(1, round(fraction * len(utt_ids))))
    by_hash = sorted(utt_ids, key=lambda utt: hashlib.sha1(utt.encode()).hexdigest())
    return set(by_hash[:count])


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
                held_out = dev_ids([r[0] for r in rows], args.dev_fraction)
                write_data_dir(Path(args.out) / f"dev_{code}", [r for r in rows if r[0] in held_out], code)
                rows = [r for r in rows if r[0] not in held_out]
            write_data_dir(Path(args.out) / f"{split}_{code}", rows, code)
            print(f"{language} {split}: {len(rows)} utterances", file=sys.stderr)
    if failures:
        print(f"{failures} utterance(s) left out (listed above)", file=sys.stderr)


if __name__ == "__main__":
    main()
