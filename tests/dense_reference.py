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


def global_reference(q, k, v, left, right, key_padding_mask=None, *, tokens, queries=None, causal=False,
                     block=64):
    """Band plus summary tokens, written out per query with N x N pooling masks (see seqattn.nn.global_tokens
    for the definition). Returns the output (B, H, N, Dv)."""
    batch, heads, n, dim = q.shape
    scale = dim**-0.5
    valid = torch.ones(batch, n, dtype=torch.bool) if key_padding_mask is None else ~key_padding_mask
    # pool[b, g, i, j]: may summary g of query i pool key j
    pool = torch.zeros(batch, tokens, n, n, dtype=torch.bool)
    for b in range(batch):
        real = [j for j in range(n) if valid[b, j]]
        for i in range(n):
            if causal:
                past = [j for j in real if j < (i // block) * block]
                for g in range(tokens):
                    pool[b, g, i, past] = True
            elif queries is None:
                for rank, j in enumerate(real):
                    pool[b, rank * tokens // len(real), i, j] = True
            else:
                pool[b, :, i, real] = True
    if queries is None:
        pool_scores = torch.zeros(batch, heads, tokens, n, n, dtype=q.dtype)
    else:
        pool_scores = torch.einsum("hgd,bhjd->bhgj", queries, k)[:, :, :, None, :].expand(-1, -1, -1, n, -1) * scale
    pool_scores = pool_scores.masked_fill(~pool[:, None], float("-inf"))
    pool_probs = torch.softmax(pool_scores, dim=-1).nan_to_num(0.0)  # (B, H, g, N, N)
    summary_keys = torch.einsum("bhgij,bhjd->bhigd", pool_probs, k)  # (B, H, N, g, D)
    summary_values = torch.einsum("bhgij,bhjd->bhigd", pool_probs, v)
    summary_seen = pool.any(-1).permute(0, 2, 1)[:, None]  # (B, 1, N, g)
    band_scores = (q @ k.transpose(-1, -2)) * scale
    band_scores = band_scores.masked_fill(~band_allowed(n, left, right, key_padding_mask), float("-inf"))
    summary_scores = torch.einsum("bhid,bhigd->bhig", q, summary_keys) * scale
    summary_scores = summary_scores.masked_fill(~summary_seen, float("-inf"))
    probs = torch.softmax(torch.cat([band_scores, summary_scores], dim=-1), dim=-1).nan_to_num(0.0)
    return probs[..., :n] @ v + torch.einsum("bhig,bhigd->bhid", probs[..., n:], summary_values), probs


def block_routed_allowed(q, k, block, top_k, key_padding_mask=None, causal=True):
    """(B, H, N, N) bool mask of MoBA-style block routing, built with plain loops.

    Query i (block b = i // block) sees its own block's real keys (j <= i when causal) and the top_k other
    blocks with the highest q_i . (mean of the block's real keys), among complete past blocks when causal and
    all other blocks otherwise, skipping blocks without a real key."""
    batch, heads, n, _ = q.shape
    real = torch.ones(batch, n, dtype=torch.bool) if key_padding_mask is None else ~key_padding_mask
    blocks = -(-n // block)
    allowed = torch.zeros(batch, heads, n, n, dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):
            means = {}
            for u in range(blocks):
                members = [j for j in range(u * block, min(n, (u + 1) * block)) if real[b, j]]
                if members:
                    means[u] = k[b, h, members].detach().double().mean(0)
            for i in range(n):
                own = i // block
                for j in range(own * block, min(n, (own + 1) * block)):
                    if real[b, j] and (j <= i or not causal):
                        allowed[b, h, i, j] = True
                candidates = [u for u in means if (u < own if causal else u != own)]
                candidates.sort(key=lambda u: float(q[b, h, i].detach().double() @ means[u]), reverse=True)
                for u in candidates[:top_k]:
                    for j in range(u * block, min(n, (u + 1) * block)):
                        allowed[b, h, i, j] = bool(real[b, j])
    return allowed


def padding_mask(batch, n, lengths):
    """(B, N) bool key padding mask, True after each row's length."""
    mask = torch.zeros(batch, n, dtype=torch.bool)
    for row, length in enumerate(lengths):
        mask[row, length:] = True
    return mask
