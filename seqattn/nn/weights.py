"""Attention weights in a form that never needs N x N memory for sparse heads.

Every kernel can hand its weights to the analysis tools as :class:`AttentionWeights`: a list of rows, each
row a query with the keys it attended and their weights. Local heads use the banded layout (row i is
query i, column o is key ``i - window_left + o``); routed heads list explicit key positions; full heads keep
the dense matrix.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionWeights:
    """Weights of a group of heads that share one kernel.

    Attributes:
        kind: which kernel produced them ("full", "local", "routing", or a variant's name).
        heads: indices of these heads within their layer.
        weights: (B, h, M, K) attention weights of M rows over K key slots.
        query_index: (B, h, M) long position of each row's query, or None when row m is query m.
        key_index: (B, h, M, K) long position of each key slot (-1 where the slot holds no key), or None for
            the dense (K = N) and banded layouts, whose key positions follow from the layout.
        window_left: for the banded layout, the key of slot o in row i is ``i - window_left + o``.
    """

    kind: str
    heads: tuple[int, ...]
    weights: torch.Tensor
    query_index: torch.Tensor | None = None
    key_index: torch.Tensor | None = None
    window_left: int | None = None

    def key_positions(self) -> torch.Tensor:
        """(B, h, M, K) long key position of every slot, -1 where there is none."""
        if self.key_index is not None:
            return self.key_index
        batch, heads, rows, slots = self.weights.shape
        device = self.weights.device
        if self.window_left is None:  # dense: slot j is key j
            return torch.arange(slots, device=device).expand(batch, heads, rows, slots)
        pos = torch.arange(rows, device=device)[:, None] - self.window_left + torch.arange(slots, device=device)
        pos = torch.where((pos >= 0) & (pos < rows), pos, torch.full_like(pos, -1))  # (M, K)
        return pos.expand(batch, heads, rows, slots)

    def query_positions(self) -> torch.Tensor:
        """(B, h, M) long query position of every row."""
        if self.query_index is not None:
            return self.query_index
        batch, heads, rows, _ = self.weights.shape
        return torch.arange(rows, device=self.weights.device).expand(batch, heads, rows)

    def to_dense(self, length: int) -> torch.Tensor:
        """(B, h, N, N) dense weights; for tests and short inputs only (rows of one query are summed)."""
        batch, heads = self.weights.shape[:2]
        dense = self.weights.new_zeros(batch, heads, length, length + 1)  # last column collects empty slots
        keys = self.key_positions().clone()
        keys[keys < 0] = length
        rows = self.query_positions()[..., None].expand_as(keys)
        flat = dense.view(batch, heads, -1)  # (B, h, N*(N+1))
        flat.scatter_add_(2, (rows * (length + 1) + keys).flatten(2), self.weights.flatten(2))
        return dense[..., :length]
