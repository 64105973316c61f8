"""Numeric conventions shared by the attention kernels."""
from __future__ import annotations

import torch


def masking_value(dtype: torch.dtype) -> float:
    """The score of a masked key: finite (a row with no visible key gives no NaN) and half of the type's
    minimum, so that adding two of them cannot overflow."""
    return torch.finfo(dtype).min / 2


def key_validity(key_padding_mask: torch.Tensor | None, batch: int, length: int, device, heads: int | None = None):
    """Which keys are real: (B, N) bool from a (B, N) padding mask (True = padding) or none, or with ``heads``
    a (B, H, N) expanded view of it (without a mask one row for every head, so kernels that build a mask per
    distinct row build one)."""
    if key_padding_mask is None:
        valid = torch.ones(batch, length, dtype=torch.bool, device=device)
    else:
        valid = ~key_padding_mask
    return valid if heads is None else valid[:, None].expand(batch, heads, length)


def merge_log_sum_exps(parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One softmax over several disjoint key sets from each set's log-sum-exp of scores, ``parts`` (..., P):
    the joint log-sum-exp (..., 1) and each set's share of the joint softmax (..., P), so that the merged output
    is the shares' mix of the per-set outputs (exact; sets of no key carry the masking value)."""
    total = torch.logsumexp(parts, dim=-1, keepdim=True)
    return total, torch.exp(parts - total)


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim where ``allowed``; rows with nothing allowed become zeros."""
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * allowed.any(-1, keepdim=True)
