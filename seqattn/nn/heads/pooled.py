"""Pooled heads (HiLo's low-frequency heads): every query attends all keys and values average-pooled over
``pool_size`` tokens (causal: only pools that end at or before it). Kernel:
:func:`seqattn.nn.pooled.pooled_attention`. No cache."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..pooled import pooled_attention
from .base import HeadKind, HeadOutput, HeadSection


@dataclass
class PooledHeads(HeadSection):
    kind: ClassVar[str] = "pooled"
    pool_size: int = 4  # tokens per pool

    def validate(self, causal: bool) -> None:
        super().validate(causal)
        if self.heads and self.pool_size < 1:
            raise ValueError(f"pooled heads need pool_size >= 1, got {self.pool_size}")

    def keys_per_query(self, length: int) -> float:
        return math.ceil(length / self.pool_size)

    def build(self, head_dim: int, causal: bool) -> PooledKind:
        return PooledKind(self, causal)


class PooledKind(nn.Module, HeadKind):
    kind: ClassVar[str] = "pooled"
    module_name: ClassVar[str] = "pooled"

    def __init__(self, section: PooledHeads, causal: bool):
        super().__init__()
        self.pool_size, self.causal = section.pool_size, causal

    def forward(self, q, k, v, key_padding_mask=None, return_weights: bool = False) -> HeadOutput:
        result = pooled_attention(q, k, v, self.pool_size, key_padding_mask, causal=self.causal,
                                  return_weights=return_weights)
        return HeadOutput(result[0], weights=result[1]) if return_weights else HeadOutput(result)
