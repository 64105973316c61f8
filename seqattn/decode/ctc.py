"""Greedy CTC decoding: best class per frame, merge repeats, drop blanks (index 0)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GreedyResult:
    tokens: list[int]  # emitted token ids
    frames: list[int]  # the first frame of each emitted token


def greedy_decode(logits: torch.Tensor, length: int | None = None, blank: int = 0) -> GreedyResult:
    """logits (T, V) of one utterance (``length`` valid frames) -> emitted tokens and their frames."""
    return collapse(logits[: length if length is not None else logits.shape[0]].argmax(-1).tolist(), blank)


def collapse(best: list[int], blank: int = 0) -> GreedyResult:
    """The CTC rule on a per-frame path: merge repeats, then drop blanks."""
    tokens, frames, previous = [], [], blank
    for t, token in enumerate(best):
        if token != blank and token != previous:
            tokens.append(token)
            frames.append(t)
        previous = token
    return GreedyResult(tokens, frames)
