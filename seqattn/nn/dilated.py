"""Dilated sliding windows in 1D (FaViT's factorised attention, CSWin's stripes): query i attends keys
``j = i + m * d`` for ``-window_left <= m <= window_right`` (stride ``d``), so a head sees ``d`` times as far as
a dense window of the same cost.

The keys a query sees all share its residue ``i mod d``. Cutting the sequence into its ``d`` interleaved
subsequences (positions ``r, r + d, r + 2d, ...``) turns every dilated window into an ordinary dense window
``[-window_left, window_right]`` inside one subsequence, so the exact banded kernel of :mod:`.local` does the
work on ``(B, H * d, N / d, D)``: O(N * window) time and memory, gradients included, causal when
``window_right = 0``, padding-aware, any length (the tail is padded to a multiple of ``d`` and masked).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_padding_mask, check_positive, check_qkv, check_window
from .local import local_attention
from .numerics import key_validity


def _interleave(x: torch.Tensor, dilation: int, padded: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, H * d, N' / d, D): subsequence r holds positions r, r + d, ... (N' = padded)."""
    batch, heads, length, dim = x.shape
    x = F.pad(x, (0, 0, 0, padded - length))
    x = x.view(batch, heads, padded // dilation, dilation, dim)  # (B, H, N'/d, d, D): position t*d + r
    return x.transpose(2, 3).reshape(batch, heads * dilation, padded // dilation, dim)  # (B, H*d, N'/d, D)


def _deinterleave(x: torch.Tensor, heads: int, dilation: int, length: int) -> torch.Tensor:
    """Inverse of :func:`_interleave` (dropping the padded tail): (B, H * d, N' / d, D) -> (B, H, N, D)."""
    batch, _, steps, dim = x.shape
    x = x.view(batch, heads, dilation, steps, dim).transpose(2, 3)  # (B, H, N'/d, d, D)
    return x.reshape(batch, heads, steps * dilation, dim)[:, :, :length]  # (B, H, N, D)


def dilated_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_left: int,
    window_right: int,
    dilation: int,
    key_padding_mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    return_weights: bool = False,
):
    """Query i attends keys ``i + m * dilation``, ``-window_left <= m <= window_right``, that are not padding.

    Returns out (B, H, N, Dv), or ``(out, (weights, key_index))`` with weights (B, H, N, L+R+1) over those
    keys and key_index their positions (-1 outside the sequence). ``dilation=1`` is :func:`local_attention`.
    """
    check_qkv(q, k, v)
    check_window("window_left", window_left)
    check_window("window_right", window_right)
    check_positive("dilation", dilation)
    batch, heads, length, dim = q.shape
    check_padding_mask(key_padding_mask, batch, length, q.device)
    scale = dim**-0.5 if scale is None else float(scale)
    padded = (length + dilation - 1) // dilation * dilation  # integer arithmetic: traceable with a symbolic N
    valid = key_validity(key_padding_mask, batch, length, q.device)  # (B, N)
    valid = F.pad(valid, (0, padded - length))  # the padded tail holds no keys
    # per subsequence: (B, d, N'/d) validity -> the (B * d, N'/d) padding mask of the interleaved batch
    sub_valid = valid.view(batch, padded // dilation, dilation).transpose(1, 2)  # (B, d, N'/d)
    qs, ks, vs = (_interleave(x, dilation, padded) for x in (q, k, v))  # (B, H*d, N'/d, D)
    # fold the subsequences into the batch so each gets its own padding mask: (B*d, H, N'/d, D)
    def fold(x):
        return x.view(batch, heads, dilation, -1, x.shape[-1]).transpose(1, 2).reshape(
            batch * dilation, heads, -1, x.shape[-1])

    result = local_attention(fold(qs), fold(ks), fold(vs), window_left, window_right,
                             ~sub_valid.reshape(batch * dilation, -1), scale=scale, return_weights=return_weights)
    out, band = result if return_weights else (result, None)

    def unfold(x):  # (B*d, H, N'/d, X) -> (B, H, N, X)
        x = x.view(batch, dilation, heads, -1, x.shape[-1]).transpose(1, 2).reshape(batch, heads * dilation, -1,
                                                                                   x.shape[-1])
        return _deinterleave(x, heads, dilation, length)

    out = unfold(out)
    if not return_weights:
        return out
    offsets = (torch.arange(window_left + window_right + 1, device=q.device) - window_left) * dilation
    keys = torch.arange(length, device=q.device)[:, None] + offsets[None, :]  # (N, L+R+1)
    keys = torch.where((keys >= 0) & (keys < length), keys, torch.full_like(keys, -1))
    return out, (unfold(band), keys.expand(batch, heads, length, -1))
