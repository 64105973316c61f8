"""Pooled attention (HiLo's low-frequency heads), a stateless kernel on (B, H, N, D): every query attends
all keys and values average-pooled over ``pool`` consecutive tokens (padding excluded from each average).
Cost O(N * N / pool). Causal mode lets a query see only pools that end at or before it, so no pooled summary
leaks the future. A query that sees no real key outputs zeros."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checks import check_padding_mask, check_positive, check_qkv
from .numerics import key_validity, masked_softmax
from .weights import AttentionWeights


def pool_keys(x: torch.Tensor, valid: torch.Tensor, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average x (B, H, N, D) over groups of ``pool`` real tokens: (B, H, M, D) and pooled validity (B, M)."""
    batch, heads, length, dim = x.shape
    groups = math.ceil(length / pool)
    pad = groups * pool - length
    weight = F.pad(valid.to(x.dtype), (0, pad)).view(batch, 1, groups, pool, 1)  # (B, 1, M, p, 1)
    summed = (F.pad(x, (0, 0, 0, pad)).view(batch, heads, groups, pool, dim) * weight).sum(3)  # (B, H, M, D)
    count = weight.sum(3)  # (B, 1, M, 1)
    return summed / count.clamp(min=1), count[:, 0, :, 0] > 0


def pooled_attention(
    q, k, v, pool: int, key_padding_mask=None, *, causal: bool = False, scale=None, return_weights: bool = False
):
    """Every query attends average-pooled keys/values (HiLo's low-frequency path).

    Returns out (B, H, N, Dv), or ``(out, AttentionWeights)`` whose key slots are pools (key_index holds
    the first position of each pool).
    """
    check_qkv(q, k, v)
    check_positive("pool", pool)
    batch, heads, length, dim = q.shape
    check_padding_mask(key_padding_mask, batch, length, q.device)
    scale = dim**-0.5 if scale is None else float(scale)
    valid = key_validity(key_padding_mask, batch, length, q.device)  # (B, N)
    kp, pooled_valid = pool_keys(k, valid, pool)  # (B, H, M, D), (B, M)
    vp, _ = pool_keys(v, valid, pool)
    scores = torch.matmul(q, kp.transpose(-1, -2)) * scale  # (B, H, N, M)
    allowed = pooled_valid[:, None, None, :]  # (B, 1, 1, M)
    if causal:
        pool_end = (torch.arange(kp.shape[2], device=q.device) + 1) * pool - 1  # last position of each pool
        allowed = allowed & (pool_end[None, :] <= torch.arange(length, device=q.device)[:, None])  # (B,1,N,M)
    allowed = allowed.expand(batch, 1, length, kp.shape[2])
    probs = masked_softmax(scores, allowed)
    out = torch.matmul(probs, vp)  # (B, H, N, Dv)
    if not return_weights:
        return out
    starts = torch.arange(kp.shape[2], device=q.device) * pool
    key_index = starts.expand(batch, heads, length, -1)
    return out, AttentionWeights("pooled", (), probs.detach(), key_index=key_index)
