"""Full (dense) attention heads: SDPA for speed, an explicit path when the weights are wanted."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_padding_mask, check_qkv


def full_attention(q, k, v, key_padding_mask=None, *, causal: bool = False, scale=None, return_weights: bool = False):
    """Dense attention over all (or, causal, all earlier) non-padding keys.

    Uses ``scaled_dot_product_attention`` unless ``return_weights``; then it returns ``(out, weights)`` with
    weights (B, H, N, N). A query with no visible key outputs zeros.
    """
    check_qkv(q, k, v)
    batch, heads, length, dim = q.shape
    check_padding_mask(key_padding_mask, batch, length, q.device)
    scale = dim**-0.5 if scale is None else float(scale)
    if causal and key_padding_mask is None and not return_weights:
        # no explicit mask: SDPA picks its fused causal kernel (no N x N mask or score matrix in memory)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    allowed = None
    if key_padding_mask is not None:
        allowed = (~key_padding_mask)[:, None, None, :]  # (B, 1, 1, N)
    if causal:
        tril = torch.ones(length, length, dtype=torch.bool, device=q.device).tril()
        allowed = tril if allowed is None else allowed & tril  # (B, 1, N, N)
    if not return_weights:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)
        if key_padding_mask is not None:  # a sequence that is all padding gives NaN rows in SDPA
            out = torch.where((~key_padding_mask).any(-1)[:, None, None, None], out, torch.zeros_like(out))
        return out
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B, H, N, N)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1) * allowed.any(-1, keepdim=True)
    else:
        probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v), probs.detach()
