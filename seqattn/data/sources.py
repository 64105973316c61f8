"""Where a training command's data comes from, as written in its config: a path and, optionally, a language."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataSource:
    path: str  # a Kaldi data dir, a fairseq .tsv manifest or a JSONL manifest
    language: str | None = None  # the language of every utterance in it (else utt2lang or the manifest says)
