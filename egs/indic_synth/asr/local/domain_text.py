#!/usr/bin/env python
"""Write the domain's text for the LM stage: every CLDR name the corpus draws its words from, one per line.

Run: python local/domain_text.py --langs hi,ta --out data/local/domain_text

The corpus's sentences are random sequences of the words of these names (local/synthesize.py), so an LM and
lexicon built from them know every word a dev or test sentence can hold, but no dev or test sentence: the
setting of a recogniser for a known list of names, as a Kaldi recipe's lexicon comes from a pronunciation
dictionary that covers its test vocabulary. The LM stage adds them to the training transcripts with
``run.sh --lm-text domain``; ``--lm-text train`` (the default) builds the LMs from the transcripts alone, whose
lexicon lacks the domain's words that no training sentence holds (22-32% of the running test words with 500
training sentences per language, 0-1% with the default 2000). The out-of-domain sentences (translated messages)
are not in this text.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthesize import cldr_names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", required=True, help="comma-separated language codes")
    parser.add_argument("--out", required=True, help="directory; writes OUT/<lang>.txt")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for lang in args.langs.split(","):
        names = cldr_names(lang)
        (out / f"{lang}.txt").write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
        print(f"{out / f'{lang}.txt'}: {len(names)} names, {len({w for n in names for w in n.split()})} words",
              file=sys.stderr)


if __name__ == "__main__":
    main()
