"""Global-token heads (GC ViT, BigBird): a ``±window`` band plus ``tokens`` summaries of the sequence, pooled
by learned queries ("learned") or as means of equal segments ("mean"); causal layers pool complete past
blocks of ``block`` positions. Kernel and pooling queries: :class:`seqattn.nn.global_tokens.GlobalTokens`.
The cache keeps the band's ring buffer and two running poolings: over the complete past blocks and over the
current block so far."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from ..global_tokens import POOLINGS, GlobalTokens
from ..incremental import RingBuffer, SummaryBuffer, attend_one
from .base import HeadKind, HeadOutput, HeadSection


@dataclass
class GlobalTokenHeads(HeadSection):
    kind: ClassVar[str] = "global"
    tokens: int = 4
    pooling: Literal["learned", "mean"] = "learned"
    window: int = 64
    block: int = 64

    def validate(self, causal: bool) -> None:
        super().validate(causal)
        if not self.heads:
            return
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.tokens < 1 or self.window < 0 or self.block < 1:
            raise ValueError(f"global heads need tokens >= 1, window >= 0 and block >= 1, got {self.tokens}, "
                             f"{self.window} and {self.block}")
        if causal and self.pooling == "mean" and self.tokens != 1:
            raise ValueError("causal global heads with pooling: mean have one summary (the mean of the past "
                             f"blocks): set tokens: 1, got {self.tokens}")

    def keys_per_query(self, length: int) -> float:
        return min(2 * self.window + 1, length) + self.tokens

    def build(self, head_dim: int, causal: bool) -> GlobalTokenKind:
        return GlobalTokenKind(self.heads, head_dim, tokens=self.tokens, pooling=self.pooling,
                               window_left=self.window, window_right=self.window, causal=causal, block=self.block)


class GlobalTokenKind(GlobalTokens, HeadKind):
    kind: ClassVar[str] = "global"
    module_name: ClassVar[str] = "global_attention"  # parameters: global_attention.queries

    def forward(self, q, k, v, key_padding_mask=None, return_weights: bool = False) -> HeadOutput:
        result = super().forward(q, k, v, key_padding_mask, return_weights=return_weights)
        return HeadOutput(result[0], weights=result[1]) if return_weights else HeadOutput(result)

    def prefill(self, q, k, v) -> SummaryBuffer:
        batch, heads, length, dim = q.shape
        ring = RingBuffer.empty(batch, heads, self.window_left, dim, v.shape[-1], q)
        ring.fill(k, v)
        done = length // self.block * self.block  # complete blocks: [0, done)
        positions = torch.arange(length, device=q.device)
        return SummaryBuffer(ring, self.token_stats(k, v, positions < done), self.token_stats(k, v, positions >= done),
                             self.block)

    def step(self, q, k, v, buffer: SummaryBuffer, position: int):
        if position % buffer.block == 0:  # a block just ended: its pooling joins the summaries
            buffer.committed = self.merge(buffer.committed, buffer.pending)
            buffer.pending = self.empty_stats(k, v)
        mass, summary_keys, summary_values, _ = buffer.committed
        ring_valid = buffer.ring.valid().expand(*q.shape[:2], -1)  # (B, h, W)
        keys = torch.cat([buffer.ring.keys, summary_keys.to(k.dtype)], dim=2)  # (B, h, W + g, D)
        values = torch.cat([buffer.ring.values, summary_values.to(v.dtype)], dim=2)
        out = attend_one(q, keys, values, torch.cat([ring_valid, torch.isfinite(mass)], dim=2), k, v)
        buffer.ring.push(k, v)
        token = torch.ones(1, dtype=torch.bool, device=q.device)
        buffer.pending = self.merge(buffer.pending, self.token_stats(k[:, :, None], v[:, :, None], token))
        return out
