"""Tasks where distance matters: associative recall far beyond an attention window, and a byte-level text whose
names and phrases recur thousands of characters apart, with each token labelled by where its copy source lies.

**Multi-query associative recall** (:func:`recall_batch`). A sequence of ``length`` tokens holds ``pairs``
key-value bigrams ``k v`` scattered over its first part among filler tokens; its last ``query_tokens``
positions ask for ``queries`` of those keys again, each followed by its value. The loss and the accuracy are
taken only at the query keys (predicting the value that follows), so the task is exactly "find where this
key stood and read the token after it". Keys, values and filler come from disjoint vocabularies and a key
occurs once per sequence before its query, so chance accuracy is ``1 / num_values``. The gap between a
query and its pair is recorded, and pairs are placed at least ``min_distance`` before the query region.

**Long-range text** (:func:`copy_source_classes`). For byte-level language modelling, each target byte is
classed by the most recent earlier occurrence, inside the model's context, of the ``ngram`` bytes ending
with it: ``within`` the attention window, only ``beyond`` it, or ``novel`` (no earlier occurrence). Loss on
``beyond`` bytes is what only long-range attention can lower; :mod:`seqattn.data.code_corpus` builds such a
text from Python's own standard library.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100  # target value the loss skips (torch's cross_entropy default)
NOVEL, WITHIN, BEYOND = 0, 1, 2
CLASS_NAMES = ("novel", "within", "beyond")


@dataclass
class RecallConfig:
    """Values of the associative-recall task."""

    length: int = 4096  # tokens per sequence
    pairs: int = 32  # key-value pairs per sequence
    queries: int = 32  # queried keys per sequence (<= pairs), each asked once
    num_keys: int = 128  # key vocabulary
    num_values: int = 64  # value vocabulary (chance accuracy 1 / num_values)
    num_filler: int = 64  # filler vocabulary
    query_tokens: int = 256  # the last positions, where the queries stand among filler
    min_distance: int = 1024  # a pair ends at least this far before the query region

    @property
    def vocab_size(self) -> int:
        return self.num_keys + self.num_values + self.num_filler

    def validate(self) -> None:
        if not 1 <= self.queries <= self.pairs <= self.num_keys:
            raise ValueError(f"need 1 <= queries <= pairs <= num_keys, got {self.queries}, {self.pairs}, "
                             f"{self.num_keys}")
        if 2 * self.queries > self.query_tokens:
            raise ValueError(f"query_tokens {self.query_tokens} cannot hold {self.queries} queries of 2 tokens")
        room = self.length - self.query_tokens - self.min_distance
        if 2 * self.pairs > room:
            raise ValueError(f"length {self.length} leaves {room} positions for {self.pairs} pairs after "
                             f"query_tokens {self.query_tokens} and min_distance {self.min_distance}")
        if self.num_values < 2 or self.num_filler < 1:
            raise ValueError("need num_values >= 2 and num_filler >= 1")


@dataclass
class RecallBatch:
    tokens: torch.Tensor  # (B, N) inputs
    targets: torch.Tensor  # (B, N) the value after each query key, IGNORE elsewhere
    distance: torch.Tensor  # (B, N) positions between a query key and its pair's key (0 where no target)


def _spread(rng: np.random.Generator, count: int, room: int) -> np.ndarray:
    """``count`` non-overlapping 2-token slots in [0, room), uniformly spread, sorted: start positions."""
    starts = np.sort(rng.choice(room - count, size=count, replace=False))  # positions among room - count
    return starts + np.arange(count)  # each earlier slot pushes the later ones by one (its second token)


def recall_batch(config: RecallConfig, batch: int, seed: int) -> RecallBatch:
    """``batch`` sequences drawn from ``seed`` (the same seed gives the same batch on any machine)."""
    config.validate()
    rng = np.random.default_rng(seed)
    n, keys0, values0, filler0 = config.length, 0, config.num_keys, config.num_keys + config.num_values
    tokens = rng.integers(filler0, filler0 + config.num_filler, size=(batch, n))
    targets = np.full((batch, n), IGNORE, dtype=np.int64)
    distance = np.zeros((batch, n), dtype=np.int64)
    pair_room = n - config.query_tokens - config.min_distance
    query_start = n - config.query_tokens
    for row in range(batch):
        keys = rng.choice(config.num_keys, size=config.pairs, replace=False) + keys0
        values = rng.integers(values0, values0 + config.num_values, size=config.pairs)
        pair_at = _spread(rng, config.pairs, pair_room)
        tokens[row, pair_at], tokens[row, pair_at + 1] = keys, values
        asked = rng.choice(config.pairs, size=config.queries, replace=False)
        query_at = query_start + _spread(rng, config.queries, config.query_tokens - 1)
        tokens[row, query_at], tokens[row, query_at + 1] = keys[asked], values[asked]
        targets[row, query_at] = values[asked]  # predicted at the query key: the token after it
        distance[row, query_at] = query_at - pair_at[asked]
    return RecallBatch(torch.from_numpy(tokens), torch.from_numpy(targets), torch.from_numpy(distance))


def copy_source_classes(tokens: np.ndarray, window: int, ngram: int = 12) -> np.ndarray:
    """Class of every position of one context (1-D ids): NOVEL, WITHIN or BEYOND (module docstring).

    Position ``t`` is classed by the ``ngram`` tokens ending at ``t`` (the target and its ``ngram - 1``
    predecessors); an earlier occurrence ending at ``s`` is a copy source at distance ``t - s``. WITHIN means
    the most recent source is at most ``window`` back (a query at ``t - 1`` sees ``s - 1`` inside a window of
    ``window``); BEYOND that it exists but is further. Positions before the first full n-gram are NOVEL.
    """
    tokens = np.asarray(tokens)
    length = tokens.shape[0]
    classes = np.full(length, NOVEL, dtype=np.int8)
    if length < ngram:
        return classes
    # one integer per n-gram: exact (no hash collisions) via a view of the n-gram bytes
    grams = np.lib.stride_tricks.sliding_window_view(tokens.astype(np.int64), ngram)  # (length - ngram + 1, ngram)
    _, ids = np.unique(grams, axis=0, return_inverse=True)
    ids = ids.reshape(-1)
    last_seen: dict[int, int] = {}
    for index, gram in enumerate(ids.tolist()):
        t = index + ngram - 1  # position of the n-gram's last token
        previous = last_seen.get(gram)
        if previous is not None:
            classes[t] = WITHIN if t - previous <= window else BEYOND
        last_seen[gram] = t
    return classes
