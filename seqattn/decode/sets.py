"""Decoding several Kaldi data dirs with one model, as Kaldi's decode of dev and test sets does: each set is
read, decoded and scored on its own into ``OUTPUT_DIR/<name of the data dir>``; a set that cannot be read is
listed in its own ``failed.txt`` and the others go on."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from seqattn.errors import SeqattnError


def set_names(data_dirs: list[str]) -> list[str]:
    """The output name of each data dir: its last path component."""
    return [Path(d.rstrip("/")).name for d in data_dirs]


def decode_data_dirs(data_dirs: list[str], output_dir: str | Path,
                     decode: Callable[[list, list, Path], int]) -> int:
    """Run ``decode(items, failures, out_dir)`` on every data dir (its inputs from
    :func:`~seqattn.decode.transcribe.collect_inputs`); returns the worst exit status (1: some input or set
    failed)."""
    from .transcribe import collect_inputs

    status = 0
    for data_dir, name in zip(data_dirs, set_names(data_dirs)):
        print(f"{name}:", file=sys.stderr)
        out = Path(output_dir) / name
        try:
            items, failures = collect_inputs([], data_dir)
        except SeqattnError as error:  # the set is reported (and listed in its failed.txt); the others go on
            print(f"seqattn transcribe: error: {error}", file=sys.stderr)
            out.mkdir(parents=True, exist_ok=True)
            (out / "failed.txt").write_text(f"{data_dir}\t{error}\n", encoding="utf-8")
            status = 1
            continue
        status = max(status, decode(items, failures, out))
    return status
