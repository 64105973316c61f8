"""Language-model training data: text files tokenized once into a flat token file, read back as packed
fixed-length sequences.

Tokenizing streams the files in chunks (no file is held in memory whole); each file starts with ``<bos>``.
The result is a ``.npy`` array of token ids (uint16 or uint32) that training memory-maps, so the corpus
size is bounded by the disk, not by RAM. Sequence i of an epoch is the window of ``length + 1`` tokens
starting at ``offset + i * length`` (inputs are its first ``length`` tokens, targets its last ``length``),
with an epoch-seeded offset and order: every epoch covers the corpus once, and the same seed and epoch give
the same batches after a resume.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from seqattn.errors import SeqattnError
from seqattn.utils.atomic import atomic_path

from .lm_tokenizers import Tokenizer, iter_text, tokenizer_to_json


class CorpusError(SeqattnError, ValueError):
    """Text that cannot be used for training (missing, empty, not UTF-8)."""


def tokenize_files(tokenizer: Tokenizer, paths: list[str], out: Path, progress: bool = True) -> np.ndarray:
    """Tokenize ``paths`` into ``out`` (.npy), reusing it when the files and tokenizer are unchanged."""
    stamp = hashlib.sha256(tokenizer_to_json(tokenizer).encode())
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise CorpusError(f"text file {path} does not exist")
        info = p.stat()
        stamp.update(f"{p.resolve()}:{info.st_size}:{info.st_mtime_ns}".encode())
    stamp_file = out.with_suffix(".json")
    if out.is_file() and stamp_file.is_file() and json.loads(stamp_file.read_text()).get("stamp") == stamp.hexdigest():
        return np.load(out, mmap_mode="r")
    dtype = np.uint16 if tokenizer.vocab_size <= 65535 else np.uint32
    total_bytes = sum(Path(p).stat().st_size for p in paths)
    parts: list[np.ndarray] = []
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"tokenizing {out.name}", disable=not progress)
    for path in paths:
        parts.append(np.array([tokenizer.bos_id], dtype=dtype))
        try:
            for chunk in iter_text([path]):
                parts.append(np.asarray(tokenizer.encode(chunk), dtype=dtype))
                bar.update(len(chunk.encode("utf-8")))
        except UnicodeDecodeError as error:
            raise CorpusError(f"{path}: not UTF-8 text ({error})") from None
    bar.close()
    tokens = np.concatenate(parts)
    if tokens.size < 2:
        raise CorpusError(f"no text in {', '.join(paths)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, tokens)
    stamp_file.write_text(json.dumps({"stamp": stamp.hexdigest(), "tokens": int(tokens.size), "files": paths}))
    return np.load(out, mmap_mode="r")


class PackedBatches(torch.utils.data.Dataset):
    """Item i: this rank's rows of global batch i of the epoch -> {"batch_index", "tokens": (b, length + 1)}."""

    def __init__(self, tokens: np.ndarray, length: int, batch_size: int, epoch: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        if tokens.shape[0] < length + 1:
            raise CorpusError(f"the corpus has {tokens.shape[0]} tokens, fewer than one sequence of {length + 1}")
        if batch_size % world_size:
            raise CorpusError(f"batch_size {batch_size} must be divisible by the {world_size} processes")
        self.tokens, self.length, self.batch_size = tokens, length, batch_size
        self.rank, self.world_size = rank, world_size
        generator = np.random.default_rng([seed, epoch])
        self.offset = int(generator.integers(0, length)) if tokens.shape[0] > 2 * length + 1 else 0
        count = (tokens.shape[0] - 1 - self.offset) // length
        if count < batch_size:
            raise CorpusError(f"the corpus holds {count} sequences of {length} tokens, fewer than one batch of "
                              f"{batch_size}: lower data.batch_size or data.seq_len, or give more text")
        self.order = generator.permutation(count)

    def __len__(self) -> int:
        return len(self.order) // self.batch_size

    def __getitem__(self, index: int) -> dict:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size][self.rank :: self.world_size]
        starts = self.offset + rows * self.length
        batch = np.stack([np.asarray(self.tokens[s : s + self.length + 1], dtype=np.int64) for s in starts])
        return {"batch_index": index, "tokens": torch.from_numpy(batch)}  # (b, length + 1)


def blocks(tokens: np.ndarray, length: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive non-overlapping blocks covering every target token of ``tokens``: block
    inputs are tokens[start:stop], targets tokens[start+1:stop+1]."""
    targets = tokens.shape[0] - 1
    return [(s, min(s + length, targets)) for s in range(0, targets, length)]
