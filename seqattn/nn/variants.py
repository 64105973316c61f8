"""1D versions of two window ideas from vision transformers, as stateless kernels on (B, H, N, D).

* :func:`shifted_window_attention` (Swin): the sequence is cut into non-overlapping windows of ``window``
  tokens and each token attends densely inside its own window. ``shift`` moves the window boundaries, so
  alternating layers with shift 0 and ``window // 2`` let information cross every boundary. Window of
  position i: ``(i + shift) // window``. Cost O(N * window).
* :func:`pooled_attention` (HiLo's low-frequency heads): every query attends all keys and values average-
  pooled over ``pool`` consecutive tokens (padding excluded from each average). Cost O(N * N / pool).
  Causal mode lets a query see only pools that end at or before it, so no pooled summary leaks the future.

Both follow the library's padding rule: a query that sees no real key outputs zeros.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checks import check_padding_mask, check_positive, check_qkv, check_window
from .numerics import key_validity
from .weights import AttentionWeights


def _masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim where ``allowed``; rows with nothing allowed become zeros."""
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * allowed.any(-1, keepdim=True)


def shifted_window_attention(
    q, k, v, window: int, shift: int = 0, key_padding_mask=None, *, causal: bool = False, scale=None,
    return_weights: bool = False,
):
    """Dense attention inside non-overlapping windows whose boundaries are moved by ``shift``.

    Returns out (B, H, N, Dv), or ``(out, AttentionWeights)`` with banded rows over each query's window.
    """
    check_qkv(q, k, v)
    check_positive("window", window)
    check_window("shift", shift)
    batch, heads, length, dim = q.shape
    check_padding_mask(key_padding_mask, batch, length, q.device)
    scale = dim**-0.5 if scale is None else float(scale)
    shift = shift % window
    front = shift  # padded position i + shift puts window boundaries on multiples of `window`
    total = math.ceil((front + length) / window) * window
    back = total - front - length
    valid = key_validity(key_padding_mask, batch, length, q.device)  # (B, N)
    valid = F.pad(valid, (front, back)).view(batch, 1, -1, 1, window)  # (B, 1, nw, 1, w)

    def windows(x):  # (B, H, N, D) -> (B, H, nw, w, D)
        return F.pad(x, (0, 0, front, back)).view(batch, heads, total // window, window, x.shape[-1])

    qw, kw, vw = windows(q), windows(k), windows(v)
    scores = torch.matmul(qw, kw.transpose(-1, -2)) * scale  # (B, H, nw, w, w)
    allowed = valid.expand(-1, -1, -1, window, -1)  # (B, 1, nw, w, w)
    if causal:
        allowed = allowed & torch.ones(window, window, dtype=torch.bool, device=q.device).tril()
    probs = _masked_softmax(scores, allowed)
    out = torch.matmul(probs, vw).view(batch, heads, total, -1)[:, :, front : front + length]  # (B, H, N, Dv)
    if not return_weights:
        return out
    rows = probs.detach().view(batch, heads, total, window)[:, :, front : front + length]  # (B, H, N, w)
    start = (torch.arange(length, device=q.device) + front) // window * window - front  # window start per query
    keys = start[:, None] + torch.arange(window, device=q.device)  # (N, w)
    keys = torch.where((keys >= 0) & (keys < length), keys, torch.full_like(keys, -1))
    key_index = keys.expand(batch, heads, length, window)
    return out, AttentionWeights("window", (), rows, key_index=key_index)


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
    probs = _masked_softmax(scores, allowed)
    out = torch.matmul(probs, vp)  # (B, H, N, Dv)
    if not return_weights:
        return out
    starts = torch.arange(kp.shape[2], device=q.device) * pool
    key_index = starts.expand(batch, heads, length, -1)
    return out, AttentionWeights("pooled", (), probs.detach(), key_index=key_index)
