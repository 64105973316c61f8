"""Shifted-window heads (Swin, in 1D): dense attention inside non-overlapping windows of ``window`` tokens
whose boundaries this layer moves by ``shift`` (alternate 0 and ``window // 2`` across layers). Kernel:
:func:`seqattn.nn.shifted_window.shifted_window_attention`. No cache: windows sit at absolute positions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..shifted_window import shifted_window_attention
from .base import HeadKind, HeadOutput, HeadSection


@dataclass
class ShiftedWindowHeads(HeadSection):
    kind: ClassVar[str] = "window"
    window: int = 64
    shift: int = 0

    def validate(self, causal: bool) -> None:
        super().validate(causal)
        if self.heads and (self.window < 1 or self.shift < 0):
            raise ValueError(f"shifted-window heads need window >= 1 and shift >= 0, got {self.window} and "
                             f"{self.shift}")

    def keys_per_query(self, length: int) -> float:
        return min(self.window, length)

    def build(self, head_dim: int, causal: bool) -> ShiftedWindowKind:
        return ShiftedWindowKind(self, causal)


class ShiftedWindowKind(nn.Module, HeadKind):
    kind: ClassVar[str] = "window"
    module_name: ClassVar[str] = "shifted_window"

    def __init__(self, section: ShiftedWindowHeads, causal: bool):
        super().__init__()
        self.window, self.shift, self.causal = section.window, section.shift, causal

    def forward(self, q, k, v, key_padding_mask=None, return_weights: bool = False) -> HeadOutput:
        result = shifted_window_attention(q, k, v, self.window, self.shift, key_padding_mask, causal=self.causal,
                                          return_weights=return_weights)
        return HeadOutput(result[0], weights=result[1]) if return_weights else HeadOutput(result)
