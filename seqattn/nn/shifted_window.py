"""Shifted-window attention (Swin, in 1D), a stateless kernel on (B, H, N, D): the sequence is cut into
non-overlapping windows of ``window`` tokens and each token attends densely inside its own window. ``shift``
moves the window boundaries, so alternating layers with shift 0 and ``window // 2`` let information cross every
boundary. Window of position i: ``(i + shift) // window``. Cost O(N * window). A query that sees no real key
outputs zeros."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checks import check_padding_mask, check_positive, check_qkv, check_window
from .numerics import key_validity, masked_softmax
from .weights import AttentionWeights


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
    probs = masked_softmax(scores, allowed)
    out = torch.matmul(probs, vw).view(batch, heads, total, -1)[:, :, front : front + length]  # (B, H, N, Dv)
    if not return_weights:
        return out
    rows = probs.detach().view(batch, heads, total, window)[:, :, front : front + length]  # (B, H, N, w)
    start = (torch.arange(length, device=q.device) + front) // window * window - front  # window start per query
    keys = start[:, None] + torch.arange(window, device=q.device)  # (N, w)
    keys = torch.where((keys >= 0) & (keys < length), keys, torch.full_like(keys, -1))
    key_index = keys.expand(batch, heads, length, window)
    return out, AttentionWeights("window", (), rows, key_index=key_index)
