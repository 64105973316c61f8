"""Local heads: a sliding window around each query (``-window_left .. +window_right``), one window for all
heads or one per head. The kernel is :func:`seqattn.nn.local.local_attention`; the cache is a ring buffer of
the last ``window_left`` keys (the widest head's), each head masking what lies beyond its own window."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..band_layout import make_layout
from ..incremental import RingBuffer, attend_one
from ..local import local_attention
from ..native_band import MAX_NATIVE_WINDOW
from ..weights import AttentionWeights
from .base import HeadKind, HeadOutput, HeadSection


def local_keys_per_query(window_left: int, window_right: int) -> int:
    """What a head of this window costs per query: the keys the fused CPU kernel visits (exactly the window),
    or for wider windows the keys the blocked kernel multiplies per query of a block (the window plus a
    block)."""
    if window_left + window_right + 1 <= MAX_NATIVE_WINDOW:
        return window_left + window_right + 1
    return make_layout(1 << 20, window_left, window_right).window


@dataclass
class LocalHeads(HeadSection):
    """Query i sees keys ``i - window_left .. i + window_right`` (``window_right`` must be 0 if causal)."""

    kind: ClassVar[str] = "local"
    window_left: int = 64
    window_right: int = 64
    # per-head windows, [[left, right], ...] one pair per head (None: window_left/window_right for all).
    # Heads of one window run together, so narrow heads cost less.
    windows: list[list[int]] | None = None

    def head_windows(self) -> tuple[list[int], list[int]]:
        """(left extents, right extents), one entry per head."""
        if self.windows is None:
            return [self.window_left] * self.heads, [self.window_right] * self.heads
        return [int(pair[0]) for pair in self.windows], [int(pair[1]) for pair in self.windows]

    def validate(self, causal: bool) -> None:
        super().validate(causal)
        if self.window_left < 0 or self.window_right < 0:
            raise ValueError(f"window_left/window_right must be >= 0, got {self.window_left}/"
                             f"{self.window_right}")
        if causal and self.window_right != 0 and self.heads:
            raise ValueError(f"causal attention needs window_right=0, got {self.window_right}")
        if self.windows is None:
            return
        if len(self.windows) != self.heads:
            raise ValueError(f"windows gives {len(self.windows)} windows for {self.heads} local heads")
        for index, pair in enumerate(self.windows):
            if len(pair) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in pair):
                raise ValueError(f"windows[{index}] must be [left, right] with non-negative ints, got {pair!r}")
            if causal and pair[1] != 0:
                raise ValueError(f"causal attention needs right extents of 0, windows[{index}] is {pair}")

    def reach(self, causal: bool) -> tuple[int, int]:
        lefts, rights = self.head_windows()
        return max(lefts, default=0), 0 if causal else max(rights, default=0)

    def keys_per_query(self, length: int) -> float:
        lefts, rights = self.head_windows()
        costs = [min(local_keys_per_query(left, right), length) for left, right in zip(lefts, rights)]
        return sum(costs) / max(len(costs), 1)

    def build(self, head_dim: int, causal: bool) -> LocalKind:
        return LocalKind(self, causal)


class LocalKind(nn.Module, HeadKind):
    kind: ClassVar[str] = "local"
    module_name: ClassVar[str] = "local"

    def __init__(self, section: LocalHeads, causal: bool):
        super().__init__()
        lefts, rights = section.head_windows()
        self.lefts, self.rights = lefts, [0] * len(rights) if causal else rights

    def forward(self, q, k, v, key_padding_mask=None, return_weights: bool = False) -> HeadOutput:
        if not return_weights:
            return HeadOutput(local_attention(q, k, v, self.lefts, self.rights, key_padding_mask))
        out, band = local_attention(q, k, v, self.lefts, self.rights, key_padding_mask, return_weights=True)
        return HeadOutput(out, weights=AttentionWeights(self.kind, (), band, window_left=max(self.lefts)))

    def prefill(self, q, k, v) -> RingBuffer:
        batch, heads, _, dim = q.shape
        buffer = RingBuffer.empty(batch, heads, max(self.lefts), dim, v.shape[-1], q, windows=self.lefts)
        buffer.fill(k, v)
        return buffer

    def step(self, q, k, v, buffer: RingBuffer, position: int):
        out = attend_one(q, buffer.keys, buffer.values, buffer.valid(), k, v)
        buffer.push(k, v)
        return out
