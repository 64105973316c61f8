#!/usr/bin/env python
"""Score a one-pass transcript of the long recording against its segments' references, in time order.

Run: python local/longform_reference.py --data data/test_long_hi --hyp exp/longform/one_pass/long_hi.txt \
       --out exp/longform/one_pass/wer
"""
from __future__ import annotations

import argparse
from pathlib import Path

from seqattn.data.text import normalize_text
from seqattn.decode.transcribe import kaldi_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="data dir with segments and text")
    parser.add_argument("--hyp", required=True, help="the transcript of the whole recording (txt output)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data = Path(args.data)
    texts = dict(line.split(" ", 1) for line in (data / "text").read_text(encoding="utf-8").splitlines())
    starts = {}
    for line in (data / "segments").read_text().splitlines():
        utt, _, start, _ = line.split()
        starts[utt] = float(start)
    reference = " ".join(normalize_text(texts[utt]) for utt in sorted(starts, key=starts.get))
    hypothesis = normalize_text(Path(args.hyp).read_text(encoding="utf-8"))
    wer, cer, _ = kaldi_scores([reference], [hypothesis])
    Path(args.out).write_text(f"{wer}\n{cer}\n")
    print(f"long recording, one pass: {wer}\n{cer}")


if __name__ == "__main__":
    main()
