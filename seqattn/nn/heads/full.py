"""Full heads: dense attention over every (causal: every earlier) key; the heads a layer's other groups leave.
Kernel: :func:`seqattn.nn.full.full_attention`; the cache keeps every key."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..full import full_attention
from ..incremental import GrowingBuffer, attend_one
from ..weights import AttentionWeights
from .base import HeadKind, HeadOutput, HeadSection


@dataclass
class FullHeads(HeadSection):
    """Not a config block: a layer's full heads are those its other sections leave (``num_heads`` minus
    theirs)."""

    kind: ClassVar[str] = "full"

    def keys_per_query(self, length: int) -> float:
        return length

    def build(self, head_dim: int, causal: bool) -> FullKind:
        return FullKind(causal)


class FullKind(nn.Module, HeadKind):
    kind: ClassVar[str] = "full"
    module_name: ClassVar[str] = "full"

    def __init__(self, causal: bool):
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v, key_padding_mask=None, return_weights: bool = False) -> HeadOutput:
        result = full_attention(q, k, v, key_padding_mask, causal=self.causal, return_weights=return_weights)
        if not return_weights:
            return HeadOutput(result)
        return HeadOutput(result[0], weights=AttentionWeights(self.kind, (), result[1]))

    def prefill(self, q, k, v) -> GrowingBuffer:
        return GrowingBuffer(k.clone(), v.clone())

    def step(self, q, k, v, buffer: GrowingBuffer, position: int):
        out = attend_one(q, buffer.keys, buffer.values, torch.ones(buffer.keys.shape[2], dtype=torch.bool,
                                                                    device=q.device), k, v)
        buffer.push(k, v)
        return out
