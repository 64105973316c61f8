"""Dense, explicitly masked attention written independently of the library, for the tests only.

Each function builds the full N x N mask from the definition in docs/DESIGN.md, section 2, and runs plain
softmax attention; rows with nothing visible give zeros.
"""
from __future__ import annotations

import torch


def masked_attention(q, k, v, allowed, scale=None):
    """allowed: bool broadcastable to (B, H, N, N). Returns (out, probs)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return probs @ v, probs


def band_allowed(n, left, right, key_padding_mask=None, device=None):
    """(B or 1, 1, N, N): i - left <= j <= i + right and j not padding."""
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    allowed = ((j >= i - left) & (j <= i + right))[None, None]
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    return allowed


def key_allowed(n, key_padding_mask=None, causal=False, device=None):
    allowed = torch.ones(1, 1, n, n, dtype=torch.bool, device=device)
    if causal:
        allowed = allowed & torch.ones(n, n, dtype=torch.bool, device=device).tril()
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    return allowed


def dilated_allowed(n, left, right, dilation, key_padding_mask=None, device=None):
    """(B or 1, 1, N, N): j = i + m * dilation with -left <= m <= right, and j not padding."""
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    step = j - i
    allowed = ((step % dilation == 0) & (step >= -left * dilation) & (step <= right * dilation))[None, None]
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    return allowed
