#!/usr/bin/env python
"""Data prep for WikiText-103 (or -2): find the released files, check them, write data/{train,valid,test}.txt.

Run: python local/prepare_wikitext.py --corpus downloads/wikitext-103 --out data [--raw]

The release (Merity et al. 2016) is a zip holding ``wikitext-103/wiki.{train,valid,test}.tokens`` (word
level, rare words already replaced by ``<unk>``) or, for the raw variant, ``wiki.*.raw``. Articles start
with a `` = Title = `` line; sections with `` = = Section = = ``. This script checks that each split is
there, non-empty and UTF-8, counts articles, lines and whitespace words, and copies the text unchanged
(the word-level perplexity of the literature is over exactly these tokens plus one end-of-line per line).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ARTICLE = re.compile(r"^ = [^=].* = $")


def find_split(corpus: Path, split: str, raw: bool) -> Path:
    name = f"wiki.{split}.{'raw' if raw else 'tokens'}"
    found = sorted(corpus.rglob(name))
    if not found:
        sys.exit(f"{corpus}: no {name} found (is this the wikitext-103{'-raw' if raw else ''}-v1 release?)")
    return found[0]


def describe(path: Path) -> dict:
    articles = lines = words = 0
    with open(path, encoding="utf-8") as handle:
        try:
            for line in handle:
                lines += 1
                words += len(line.split())
                if ARTICLE.match(line.rstrip("\n")):
                    articles += 1
        except UnicodeDecodeError as error:
            sys.exit(f"{path}: not UTF-8 near line {lines + 1} ({error})")
    if words == 0:
        sys.exit(f"{path}: empty")
    return {"file": str(path), "articles": articles, "lines": lines, "words": words}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="the unzipped release (any folder above the wiki.* files)")
    parser.add_argument("--out", default="data")
    parser.add_argument("--raw", action="store_true", help="use wiki.*.raw instead of wiki.*.tokens")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stats = {}
    for split in ("train", "valid", "test"):
        source = find_split(Path(args.corpus), split, args.raw)
        stats[split] = describe(source)
        shutil.copyfile(source, out / f"{split}.txt")
        print(f"{split}: {stats[split]['articles']} articles, {stats[split]['lines']} lines, "
              f"{stats[split]['words']} words ({source})")
    (out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")


if __name__ == "__main__":
    main()
