"""A traceable formulation of banded attention, for ``torch.export`` / ONNX.

The training kernel (:mod:`seqattn.nn.local`) is a custom autograd function over chunks, sized with Python
integers computed from the sequence length, with strided views and data-dependent shortcuts. None of that
survives graph capture with a symbolic length. This module computes the same result with plain tensor
operations whose shapes are arithmetic on the (symbolic) length: queries in blocks of ``b``, every block's
key window gathered with one index tensor, an additive band mask shared by all blocks. Memory stays
O(N * window) (``span`` copies of the keys), so exported models keep local attention's linear cost.

It is used automatically while exporting (``torch.compiler.is_exporting()``); tests compare it with the
dense masked reference like every other kernel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .band_layout import default_block_size


def _ceil_div(a, b: int):
    return (a + b - 1) // b


def gathered_band_attention(q, k, v, window_left: int, window_right: int, key_valid: torch.Tensor,
                            scale: float, self_bias: float = 0.0, return_lse: bool = False):
    """Band attention (B, H, N, Dv) of ``q, k, v`` (B, H, N, D); ``key_valid`` (B, H, N) bool.

    Query i sees key j iff ``i - window_left <= j <= i + window_right`` and ``key_valid[..., j]``; a query
    that sees no key outputs zeros (the convention of :func:`seqattn.nn.local_attention`). With
    ``return_lse`` it returns ``(out, lse)``, lse (B, H, N) as the training kernel gives it.
    """
    batch, heads, length, dim = q.shape
    block = default_block_size(window_left, window_right, 1 << 30)  # independent of the (symbolic) length
    left_blocks, right_blocks = _ceil_div(window_left, block), _ceil_div(window_right, block)
    span = left_blocks + 1 + right_blocks
    window = span * block
    num_blocks = _ceil_div(length, block)
    tail = num_blocks * block - length
    front, back = left_blocks * block, tail + right_blocks * block
    queries = F.pad(q, (0, 0, 0, tail)).reshape(batch, heads, num_blocks, block, dim)  # (B, H, nb, b, D)
    # Key window of block t: padded rows [t*b, t*b + W), i.e. sequence positions t*b - nl*b ...
    index = (torch.arange(num_blocks, device=q.device)[:, None] * block
             + torch.arange(window, device=q.device)[None, :])  # (nb, W)
    keys = F.pad(k, (0, 0, front, back))[:, :, index]  # (B, H, nb, W, D)
    values = F.pad(v, (0, 0, front, back))[:, :, index]  # (B, H, nb, W, Dv)
    valid = F.pad(key_valid, (front, back), value=False)[:, :, index]  # (B, H, nb, W)
    offsets = torch.arange(window, device=q.device)[None, :] - front - torch.arange(block, device=q.device)[:, None]
    band = (offsets >= -window_left) & (offsets <= window_right)  # (b, W): key j - query i inside the band
    allowed = band[None, None, None] & valid[:, :, :, None, :]  # (B, H, nb, b, W)
    scores = torch.matmul(queries, keys.transpose(-1, -2)) * scale  # (B, H, nb, b, W)
    if self_bias:
        scores = scores + (offsets == 0).to(scores.dtype) * self_bias
    negative = torch.finfo(scores.dtype).min / 2
    scores = scores.masked_fill(~allowed, negative)
    reduced = scores.dtype in (torch.float16, torch.bfloat16)  # softmax in fp32 for half types, as the kernel
    probs = torch.softmax(scores.float() if reduced else scores, dim=-1).to(v.dtype)
    probs = probs * allowed.any(-1, keepdim=True).to(v.dtype)  # a query that sees no key outputs zeros
    out = torch.matmul(probs, values)  # (B, H, nb, b, Dv)
    out = out.reshape(batch, heads, num_blocks * block, v.shape[-1])  # (B, H, nb*b, Dv)
    if not return_lse:
        return out[:, :, :length]
    lse_dtype = torch.promote_types(scores.dtype, torch.float32)
    lse = torch.logsumexp(scores.to(lse_dtype), dim=-1).masked_fill(~allowed.any(-1), torch.finfo(lse_dtype).min / 2)
    lse = lse.reshape(batch, heads, num_blocks * block)  # (B, H, nb*b)
    return out[:, :, :length], lse[:, :, :length]
