#!/usr/bin/env python
"""The text of the Indic ASR demo (egs/indic_synth/asr), without the audio: per language, the same training,
dev and test sentences the ASR recipe synthesises (same generator, seeds and lengths), or the `text` files of
its data dirs when --asr-data points at them.

Run: python local/make_text.py --out data --langs hi,mr,bn,ta,te,kn [--asr-data ../asr/data]

Writes data/train.txt (every language, one sentence per line, interleaved), data/valid.txt (the dev
sentences) and data/test_<lang>.txt.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "asr" / "local"))
from synthesize import sentences  # noqa: E402  (the ASR recipe's text generator)


def kaldi_text(path: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in path.read_text(encoding="utf-8").splitlines() if " " in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data")
    parser.add_argument("--langs", default="hi,mr,bn,ta,te,kn")
    parser.add_argument("--asr-data", help="the ASR recipe's data root: read its train_/dev_/test_<lang>/text")
    parser.add_argument("--train-utts", type=int, default=500)
    parser.add_argument("--test-utts", type=int, default=40)
    parser.add_argument("--train-words", type=int, nargs=2, default=(1, 4))
    parser.add_argument("--test-words", type=int, nargs=2, default=(2, 6))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, valid = [], []
    for lang in args.langs.split(","):
        if args.asr_data:
            root = Path(args.asr_data)
            lang_train, lang_dev, lang_test = (kaldi_text(root / f"{split}_{lang}" / "text")
                                               for split in ("train", "dev", "test"))
        else:
            lang_train = sentences(lang, "train", args.train_utts, args.seed, *args.train_words)
            seen = set(lang_train)
            lang_dev = sentences(lang, "dev", args.test_utts, args.seed, *args.test_words, exclude=seen)
            lang_test = sentences(lang, "test", args.test_utts, args.seed, *args.test_words, exclude=seen)
        train += lang_train
        valid += lang_dev
        (out / f"test_{lang}.txt").write_text("".join(f"{s}\n" for s in lang_test), encoding="utf-8")
        print(f"{lang}: {len(lang_train)} train, {len(lang_dev)} dev, {len(lang_test)} test sentences")
    random.Random(args.seed).shuffle(train)  # interleave the languages (training packs lines in file order)
    (out / "train.txt").write_text("".join(f"{s}\n" for s in train), encoding="utf-8")
    (out / "valid.txt").write_text("".join(f"{s}\n" for s in valid), encoding="utf-8")


if __name__ == "__main__":
    main()
