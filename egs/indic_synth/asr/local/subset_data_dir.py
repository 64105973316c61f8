#!/usr/bin/env python
"""Copy a Kaldi data dir keeping a fraction of each speaker's utterances, spread evenly over them.

    python local/subset_data_dir.py --fraction 0.1 data/train_hi data/train_hi_labels0.1

Like Kaldi's ``utils/subset_data_dir.sh --per-spk``, but by share: of a speaker's utterances in sorted order,
the i-th is kept when ``floor((i + 1) * fraction)`` exceeds ``floor(i * fraction)``, so every voice keeps the
same share and the kept utterances are spread over the list (deterministic, no seed). The source is
validated first (``seqattn.data.kaldi.read_data_dir``); every per-utterance file it has (``text``,
``utt2spk``, ``utt2lang``, ``segments``) is filtered, ``wav.scp`` keeps the recordings still used and
``spk2utt`` is rebuilt.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from seqattn.data.kaldi import DataDirError, read_data_dir

PER_UTTERANCE = ("text", "utt2spk", "utt2lang", "segments")


def kept_utterances(speakers: dict[str, list[str]], fraction: float) -> set[str]:
    kept = set()
    for utts in speakers.values():
        for index, utt in enumerate(sorted(utts)):
            if math.floor((index + 1) * fraction) > math.floor(index * fraction):
                kept.add(utt)
    return kept


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def subset(source: Path, target: Path, fraction: float) -> int:
    data = read_data_dir(source, check_audio=False)
    speakers: dict[str, list[str]] = {}
    for utt in data.utterances:
        speakers.setdefault(utt.speaker, []).append(utt.utt_id)
    kept = kept_utterances(speakers, fraction)
    target.mkdir(parents=True, exist_ok=True)
    recordings = None
    for name in PER_UTTERANCE:
        if (source / name).is_file():
            rows = [line for line in _lines(source / name) if line.split(maxsplit=1)[0] in kept]
            (target / name).write_text("".join(f"{row}\n" for row in rows), encoding="utf-8")
            if name == "segments":
                recordings = {row.split()[1] for row in rows}
    wav_rows = [line for line in _lines(source / "wav.scp")
                if line.split(maxsplit=1)[0] in (kept if recordings is None else recordings)]
    (target / "wav.scp").write_text("".join(f"{row}\n" for row in wav_rows), encoding="utf-8")
    spk2utt = sorted((spk, " ".join(sorted(u for u in utts if u in kept))) for spk, utts in speakers.items()
                     if any(u in kept for u in utts))
    (target / "spk2utt").write_text("".join(f"{spk} {utts}\n" for spk, utts in spk2utt), encoding="utf-8")
    read_data_dir(target, check_audio=False)  # the copy is a valid data dir
    return len(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--fraction", type=float, required=True, help="share of each speaker's utterances (0, 1]")
    args = parser.parse_args()
    if not 0 < args.fraction <= 1:
        sys.exit(f"subset_data_dir: --fraction must be in (0, 1], got {args.fraction}")
    try:
        count = subset(args.source, args.target, args.fraction)
    except DataDirError as error:
        sys.exit(f"subset_data_dir: {error}")
    print(f"{args.target}: {count} utterances ({args.fraction:g} of each speaker's in {args.source})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
