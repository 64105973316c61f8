"""Dilated heads: query i sees keys ``i + m * dilation``, ``-window <= m <= window`` (``m <= 0`` when
causal). Kernel: :func:`seqattn.nn.dilated.dilated_attention`; the cache keeps the last
``dilation * window`` keys and sees every ``dilation``-th of them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..dilated import dilated_attention
from ..incremental import RingBuffer, attend_one
from ..weights import AttentionWeights
from .base import HeadKind, HeadOutput, HeadSection


@dataclass
class DilatedHeads(HeadSection):
    kind: ClassVar[str] = "dilated"
    dilation: int = 4
    window: int = 16  # in strides: the heads reach dilation * window frames

    def validate(self, causal: bool) -> None:
        super().validate(causal)
        if self.heads and (self.dilation < 1 or self.window < 0):
            raise ValueError(f"dilated heads need dilation >= 1 and window >= 0, got {self.dilation} and "
                             f"{self.window}")

    def reach(self, causal: bool) -> tuple[int, int]:
        frames = self.window * self.dilation
        return frames, 0 if causal else frames

    def keys_per_query(self, length: int) -> float:
        return min(2 * self.window + 1, length)

    def build(self, head_dim: int, causal: bool) -> DilatedKind:
        return DilatedKind(self, causal)


class DilatedKind(nn.Module, HeadKind):
    kind: ClassVar[str] = "dilated"
    module_name: ClassVar[str] = "dilated"

    def __init__(self, section: DilatedHeads, causal: bool):
        super().__init__()
        self.dilation, self.window_left = section.dilation, section.window
        self.window_right = 0 if causal else section.window

    def forward(self, q, k, v, key_padding_mask=None, return_weights: bool = False) -> HeadOutput:
        result = dilated_attention(q, k, v, self.window_left, self.window_right, self.dilation, key_padding_mask,
                                   return_weights=return_weights)
        if not return_weights:
            return HeadOutput(result)
        out, (weights, keys) = result
        return HeadOutput(out, weights=AttentionWeights(self.kind, (), weights, key_index=keys))

    def prefill(self, q, k, v) -> RingBuffer:
        batch, heads, _, dim = q.shape
        buffer = RingBuffer.empty(batch, heads, self.dilation * self.window_left, dim, v.shape[-1], q,
                                  stride=self.dilation)
        buffer.fill(k, v)
        return buffer

    def step(self, q, k, v, buffer: RingBuffer, position: int):
        out = attend_one(q, buffer.keys, buffer.values, buffer.valid(), k, v)
        buffer.push(k, v)
        return out
