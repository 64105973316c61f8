"""Global tokens in 1D (GC ViT's global context, BigBird's global tokens): a sliding window plus ``g`` summary
tokens that every query attends to, each summary attending to the whole sequence.

A global head's query ``i`` attends, in one softmax, to

- its band: keys ``i - window_left .. i + window_right`` that are not padding (as :func:`local_attention`);
- ``g`` summary tokens. Summary ``t`` has key ``sum_j p_tj k_j`` and value ``sum_j p_tj v_j``: a pooling of the
  sequence by weights ``p_tj`` that are

  - ``learned``: ``softmax_j(u_t . k_j * scale)`` with a learned query ``u_t`` per head and token, so the summary
    token attends to every (real) key: a global token that reads everything;
  - ``mean``: uniform over the ``t``-th of ``g`` equal segments of the real tokens.

Causal layers see only the past. Their summaries are computed over complete past blocks: a query in block
``b = i // block`` sees summaries pooled over positions ``0 .. b * block - 1`` (none in block 0), so a
summary never contains the query's own block, let alone its future. With ``learned`` pooling the ``g``
summaries differ by their query; ``mean`` pooling in a causal layer has one summary, the mean of the past
blocks.

Cost stays linear in N: the band goes through the banded kernel (which also returns each query's
log-sum-exp, so the band and the summaries merge into one exact softmax), the summaries cost O(N * g * D),
and causal summaries for every block come from one prefix sum over per-block statistics. The prefix sum
runs in float64 with one reference maximum per (batch, head, token): exact unless a summary's pooling
scores span more than ~700 nats, where the earliest blocks' share would underflow.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .checks import check_padding_mask, check_positive, check_qkv, check_window
from .local import banded_attention
from .numerics import key_validity, masking_value, merge_log_sum_exps
from .weights import AttentionWeights

POOLINGS = ("learned", "mean")


@dataclass
class Summaries:
    """Summary tokens per query block: keys (B, h, T, g, D), values (B, h, T, g, Dv), valid (B, h, T, g) bool
    and centre (B, h, T, g), the pooling-weighted mean position of each summary (for the locality analysis).
    T = 1 for a bidirectional layer (every query sees the same summaries), T = number of blocks if causal."""

    keys: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor
    centre: torch.Tensor


def _pool_stats(scores: torch.Tensor, mask: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions):
    """Softmax pooling of the keys a mask admits, as mergeable statistics.

    scores (..., g, n), mask and positions broadcastable to it, k (..., n, D), v (..., n, Dv).
    Returns (log mass (..., g), mean key (..., g, D), mean value (..., g, Dv), mean position (..., g)), the log
    mass being ``logsumexp`` of the admitted scores (-inf where none is admitted, the means then 0)."""
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32)).masked_fill(~mask, float("-inf"))
    peak = scores.amax(-1, keepdim=True)  # (..., g, 1)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    weights = torch.exp(scores - peak)  # (..., g, n); 0 where masked
    total = weights.sum(-1)  # (..., g)
    probs = weights / total.clamp(min=torch.finfo(weights.dtype).tiny)[..., None]
    log_total = torch.log(total.clamp(min=torch.finfo(total.dtype).tiny))  # clamped: no NaN gradient at 0
    mass = torch.where(total > 0, peak[..., 0] + log_total, torch.full_like(total, float("-inf")))
    centre = (probs * positions.to(probs.dtype)).sum(-1)  # (..., g)
    return mass, probs.to(k.dtype) @ k, probs.to(v.dtype) @ v, centre


def _split_blocks(x: torch.Tensor, axis: int, blocks: int, block: int) -> torch.Tensor:
    """``x`` with its sequence axis padded (zeros, False) to ``blocks * block`` and split into (blocks, block)."""
    pad = blocks * block - x.shape[axis]
    x = torch.nn.functional.pad(x, [0, 0] * (x.dim() - 1 - axis) + [0, pad])
    return x.unflatten(axis, (blocks, block))


def _merge_stats(first, second):
    """Combine two poolings' statistics (log mass, means...) into the pooling over both key sets."""
    mass = torch.logaddexp(first[0], second[0])
    share1 = torch.where(torch.isfinite(first[0]), torch.exp(first[0] - mass), torch.zeros_like(mass))
    share2 = torch.where(torch.isfinite(second[0]), torch.exp(second[0] - mass), torch.zeros_like(mass))
    means = [(a * share1[..., None].to(a.dtype) + b * share2[..., None].to(b.dtype)) if a.dim() > mass.dim()
             else a * share1 + b * share2 for a, b in zip(first[1:], second[1:])]
    return (mass, *means)


def pooling_scores(queries: torch.Tensor | None, k: torch.Tensor, tokens: int, scale: float) -> torch.Tensor:
    """(B, h, g, N) pooling scores of the summary queries (h, g, D) over keys (B, h, N, D); zeros (uniform
    pooling) when there are no learned queries."""
    if queries is None:
        return k.new_zeros(k.shape[0], k.shape[1], tokens, k.shape[2])
    return torch.einsum("hgd,bhnd->bhgn", queries.to(k.dtype), k) * scale


def global_summaries(k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor, *, tokens: int,
                     queries: torch.Tensor | None, causal: bool, block: int, scale: float) -> Summaries:
    """The summary tokens of keys/values (B, h, N, D) whose real positions ``valid`` (B, N) marks.

    ``queries`` (h, g, D) are the learned pooling queries, or None for mean pooling (``g`` equal segments if
    bidirectional, the mean of the past blocks if causal)."""
    batch, heads, length, _ = k.shape
    positions = torch.arange(length, device=k.device)
    if not causal:
        if queries is None:  # segment t holds real tokens of rank in [t * n / g, (t + 1) * n / g)
            rank = valid.long().cumsum(1) - 1  # (B, N)
            count = valid.long().sum(1, keepdim=True).clamp(min=1)  # (B, 1)
            segment = torch.div(rank * tokens, count, rounding_mode="floor")  # (B, N)
            member = (segment[:, None, :] == torch.arange(tokens, device=k.device)[None, :, None]) & valid[:, None]
            scores = k.new_zeros(batch, heads, tokens, length)
            mask = member[:, None]  # (B, 1, g, N)
        else:
            scores = pooling_scores(queries, k, tokens, scale)  # (B, h, g, N)
            mask = valid[:, None, None, :]  # (B, 1, 1, N)
        mass, keys, values, centre = _pool_stats(scores, mask, k, v, positions)
        return Summaries(keys[:, :, None], values[:, :, None], torch.isfinite(mass)[:, :, None],
                         centre[:, :, None])
    # causal: statistics of every block, then an exclusive prefix over blocks (blocks before tokens, so the
    # per-block matmuls share their batch axes with the keys and nothing is broadcast-copied)
    blocks = (length + block - 1) // block
    scores = pooling_scores(queries, k, tokens, scale)  # (B, h, g, N)
    scores = _split_blocks(scores, 3, blocks, block).transpose(2, 3)  # (B, h, g, T, b) -> (B, h, T, g, b)
    mask = _split_blocks(valid, 1, blocks, block)[:, None, :, None]  # (B, T, b) -> (B, 1, T, 1, b)
    kb = _split_blocks(k, 2, blocks, block)  # (B, h, T, b, D)
    vb = _split_blocks(v, 2, blocks, block)  # (B, h, T, b, Dv)
    positions = torch.arange(blocks * block, device=k.device).view(blocks, 1, block)  # (T, 1, b)
    # per block: log mass and mean position (B, h, T, g), mean key (B, h, T, g, D), mean value (B, h, T, g, Dv)
    mass, keys, values, centre = _pool_stats(scores, mask, kb, vb, positions)
    reference = mass.amax(2, keepdim=True)  # (B, h, 1, g)
    reference = torch.where(torch.isfinite(reference), reference, torch.zeros_like(reference))
    share = torch.exp((mass - reference).double())  # (B, h, T, g): block weights, 0 for empty blocks

    def exclusive_prefix(x):  # sum over the blocks before each block (dim 2)
        total = x.cumsum(2)
        return torch.cat([torch.zeros_like(total[:, :, :1]), total[:, :, :-1]], dim=2)

    weight = exclusive_prefix(share)  # (B, h, T, g)
    denom = weight.clamp(min=torch.finfo(torch.float64).tiny)
    return Summaries(
        keys=(exclusive_prefix(share[..., None] * keys.double()) / denom[..., None]).to(k.dtype),
        values=(exclusive_prefix(share[..., None] * values.double()) / denom[..., None]).to(v.dtype),
        valid=weight > 0,
        centre=(exclusive_prefix(share * centre.double()) / denom).float(),
    )


def _summary_scores(q: torch.Tensor, summaries: Summaries, block: int, scale: float) -> torch.Tensor:
    """(B, h, N, g) scores of queries (B, h, N, D) against the summaries their block sees (masked ones at
    the masking value)."""
    batch, heads, length, dim = q.shape
    blocks = summaries.keys.shape[2]
    if blocks == 1:
        scores = torch.einsum("bhnd,bhgd->bhng", q, summaries.keys[:, :, 0]) * scale  # (B, h, N, g)
        valid = summaries.valid[:, :, 0, None, :]  # (B, h, 1, g)
    else:
        qb = _split_blocks(q, 2, blocks, block)  # (B, h, T, b, D)
        scores = torch.einsum("bhtrd,bhtgd->bhtrg", qb, summaries.keys) * scale  # (B, h, T, b, g)
        scores = scores.reshape(batch, heads, blocks * block, -1)[:, :, :length]  # (B, h, N, g)
        valid = summaries.valid[:, :, :, None, :].expand(-1, -1, -1, block, -1)  # (B, h, T, b, g)
        valid = valid.reshape(batch, heads, blocks * block, -1)[:, :, :length]  # (B, h, N, g)
    return scores.masked_fill(~valid, masking_value(scores.dtype)), valid.expand_as(scores)


def _per_query(x: torch.Tensor, block: int, length: int) -> torch.Tensor:
    """(B, h, T, g) per-block summary data -> (B, h, N, g) per query."""
    if x.shape[2] == 1:
        return x.expand(-1, -1, length, *x.shape[3:])
    return x.repeat_interleave(block, dim=2)[:, :, :length]


def _mix_summaries(probs: torch.Tensor, values: torch.Tensor, block: int) -> torch.Tensor:
    """Weights (B, h, N, g) over the summaries' values (B, h, T, g, Dv) of each query's block -> (B, h, N, Dv),
    without copying the values per query."""
    batch, heads, length, tokens = probs.shape
    blocks = values.shape[2]
    if blocks == 1:
        return torch.einsum("bhng,bhgd->bhnd", probs, values[:, :, 0])
    probs = _split_blocks(probs, 2, blocks, block)  # (B, h, T, b, g)
    out = torch.einsum("bhtrg,bhtgd->bhtrd", probs, values)  # (B, h, T, b, Dv)
    return out.reshape(batch, heads, blocks * block, -1)[:, :, :length]  # (B, h, N, Dv)


def global_token_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_left: int,
    window_right: int,
    key_padding_mask: torch.Tensor | None = None,
    *,
    tokens: int,
    queries: torch.Tensor | None = None,
    causal: bool = False,
    block: int = 64,
    scale: float | None = None,
    return_weights: bool = False,
):
    """Sliding window plus ``tokens`` global summary tokens, in one softmax (see the module docstring).

    Args:
        q, k, v: (B, H, N, D).
        window_left, window_right: the band; ``window_right`` must be 0 when ``causal``.
        key_padding_mask: optional (B, N) bool, True marks padding (never a key, never pooled).
        tokens: number of summary tokens g.
        queries: learned pooling queries (H, g, D), or None for mean pooling.
        causal: summaries pool complete past blocks of ``block`` positions only.

    Returns out (B, H, N, Dv), or ``(out, AttentionWeights)`` whose slots are the band (``L + R + 1``, key
    positions as the band gives them) followed by the g summaries, placed at their mean position.
    """
    check_qkv(q, k, v)
    check_window("window_left", window_left)
    check_window("window_right", window_right)
    check_positive("tokens", tokens)
    check_positive("block", block)
    if causal and window_right:
        raise ValueError(f"a causal global head needs window_right=0, got {window_right}")
    batch, heads, length, dim = q.shape
    if queries is not None and tuple(queries.shape) != (heads, tokens, dim):
        raise ValueError(f"queries must be (heads, tokens, dim) = {(heads, tokens, dim)}, got {tuple(queries.shape)}")
    if causal and queries is None and tokens != 1:
        raise ValueError(f"causal mean pooling gives one summary (the mean of the past blocks), got tokens={tokens}; "
                         "use learned pooling for more")
    check_padding_mask(key_padding_mask, batch, length, q.device)
    scale = dim**-0.5 if scale is None else float(scale)
    valid = key_validity(key_padding_mask, batch, length, q.device)  # (B, N)
    key_valid = valid[:, None].expand(batch, heads, length)
    band_out, band_lse = banded_attention(q, k, v, window_left, window_right, key_valid, scale=scale,
                                          return_lse=True)  # (B, H, N, Dv), (B, H, N)
    summaries = global_summaries(k, v, valid, tokens=tokens, queries=queries, causal=causal, block=block,
                                 scale=scale)
    scores, seen = _summary_scores(q, summaries, block, scale)  # (B, H, N, g)
    scores = scores.to(band_lse.dtype)  # at least float32, as the band's log-sum-exp
    summary_lse = torch.logsumexp(scores, dim=-1)  # (B, H, N)
    any_summary = seen.any(-1)  # (B, H, N)
    summary_lse = summary_lse.masked_fill(~any_summary, masking_value(scores.dtype))
    summary_probs = torch.softmax(scores, dim=-1) * any_summary[..., None]  # (B, H, N, g)
    summary_out = _mix_summaries(summary_probs.to(v.dtype), summaries.values, block)  # (B, H, N, Dv)
    # one softmax over band and summaries: weight each part by its share of the joint normaliser
    _, shares = merge_log_sum_exps(torch.stack([band_lse, summary_lse], dim=-1))  # (B, H, N, 2)
    band_share, summary_share = shares[..., 0], shares[..., 1]
    out = band_out * band_share[..., None].to(v.dtype) + summary_out * summary_share[..., None].to(v.dtype)
    if not return_weights:
        return out
    _, band = banded_attention(q.detach(), k.detach(), v.detach(), window_left, window_right, key_valid,
                               scale=scale, return_weights=True)  # (B, H, N, L+R+1), normalised over the band
    weights = torch.cat([band * band_share[..., None].to(band.dtype),
                         (summary_probs * summary_share[..., None]).to(band.dtype)], dim=-1).detach()
    offsets = torch.arange(window_left + window_right + 1, device=q.device) - window_left
    band_keys = torch.arange(length, device=q.device)[:, None] + offsets  # (N, L+R+1)
    band_keys = torch.where((band_keys >= 0) & (band_keys < length), band_keys, torch.full_like(band_keys, -1))
    centre = _per_query(summaries.centre, block, length).round().long()  # (B, H, N, g)
    centre = torch.where(seen, centre, torch.full_like(centre, -1))
    key_index = torch.cat([band_keys.expand(batch, heads, -1, -1), centre], dim=-1)
    return out, AttentionWeights("global", (), weights, key_index=key_index)


class GlobalTokens(nn.Module):
    """The global heads of one layer: settings plus, for learned pooling, the summary queries (h, g, D)."""

    def __init__(self, heads: int, head_dim: int, *, tokens: int, pooling: str, window_left: int,
                 window_right: int, causal: bool, block: int):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"global pooling must be one of {POOLINGS}, got {pooling!r}")
        self.tokens, self.pooling, self.causal, self.block = tokens, pooling, causal, block
        self.window_left, self.window_right = window_left, 0 if causal else window_right
        self.queries = None
        if pooling == "learned":
            # small queries: pooling starts close to uniform and learns where to look
            self.queries = nn.Parameter(torch.randn(heads, tokens, head_dim) * 0.02)

    def forward(self, q, k, v, key_padding_mask=None, return_weights: bool = False):
        return global_token_attention(q, k, v, self.window_left, self.window_right, key_padding_mask,
                                      tokens=self.tokens, queries=self.queries, causal=self.causal,
                                      block=self.block, return_weights=return_weights)

    # -- cached generation (causal layers): a running pooling of the complete past blocks ---------------------

    def token_stats(self, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor):
        """Pooling statistics of keys/values (B, h, n, D) at the positions ``mask`` (n,) admits."""
        scale = k.shape[-1] ** -0.5
        scores = pooling_scores(self.queries, k, self.tokens, scale)  # (B, h, g, n)
        positions = torch.arange(k.shape[2], device=k.device)
        return _pool_stats(scores, mask, k, v, positions)

    def empty_stats(self, key: torch.Tensor, value: torch.Tensor):
        """The statistics of pooling nothing, shaped for keys/values (B, h, D) of one step."""
        batch, heads = key.shape[:2]
        mass = torch.full(
            (batch, heads, self.tokens),
            float("-inf"),
            dtype=torch.promote_types(key.dtype, torch.float32),
            device=key.device,
        )
        return (
            mass,
            key.new_zeros(batch, heads, self.tokens, key.shape[-1]),
            value.new_zeros(batch, heads, self.tokens, value.shape[-1]),
            torch.zeros_like(mass),
        )

    def merge(self, first, second):
        return _merge_stats(first, second)
