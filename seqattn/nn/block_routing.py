"""Block-routed attention (MoBA, Lu et al. 2025): each query attends its own block plus the ``top_k`` key blocks
whose mean key scores highest against it.

The sequence is cut into blocks of ``block`` positions. Query ``i`` in block ``b = i // block`` sees

- its own block: keys ``j`` with ``j // block == b`` (and ``j <= i`` when causal);
- ``top_k`` other blocks ``u``, chosen by the gate ``q_i . mean(k_j : j in u)``: the highest-scoring blocks among
  the complete past blocks ``u < b`` when causal, among all other blocks otherwise. Blocks with no real key
  (padding only) are never chosen; a query with fewer candidates than ``top_k`` takes all of them.

One softmax runs over all of these keys. The gate is a hard top-k (no gradient flows through the choice, as in
MoBA); gradients flow through the attention itself. Each query's choice depends only on its own query and on
the keys of the blocks it may choose from, so causal heads never see the future: a token after position ``t``
changes neither which blocks a query at ``t`` or earlier chooses nor what is in them.

``top_k`` counts the blocks chosen *besides* the query's own block, so a query sees at most
``(top_k + 1) * block`` keys (MoBA's "top-k = 3" including the current block is ``top_k = 2`` here).

How it is computed, in O(N * (top_k + 1) * block) time and memory:

- the own block is the banded kernel of :mod:`seqattn.nn.local` (window ``block - 1`` with the block number
  as segment id), which also returns each query's log-sum-exp;
- the chosen blocks go through a key-block-major pass: the (query, chosen block) pairs are sorted by block and
  cut into tiles of at most ``tile`` queries that all chose the same block, so each tile is one dense
  ``(tile x D) @ (D x block)`` product with the block's keys (MoBA's varlen grouping, on any device);
- the partial results merge exactly by their log-sum-exps into one softmax.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .checks import check_padding_mask, check_positive, check_qkv
from .local import _neg, banded_attention
from .weights import AttentionWeights

# Queries gated at once: bounds the (B, H, chunk, blocks) gate scores.
_GATE_CHUNK = 4096


def _blocked(x: torch.Tensor, block: int) -> torch.Tensor:
    """(B, H, N, ...) -> (B, H, nb, block, ...) with the sequence padded (zeros / False) to whole blocks."""
    length = x.shape[2]
    blocks = math.ceil(length / block)
    pad = blocks * block - length
    if pad:
        widths = [0, 0] * (x.dim() - 3) + [0, pad]
        x = F.pad(x, widths)
    return x.view(*x.shape[:2], blocks, block, *x.shape[3:])


def block_means(k: torch.Tensor, key_valid: torch.Tensor, block: int):
    """Mean key of every block over its real keys: (B, H, nb, D), and whether it has any (B, H, nb) bool."""
    kb = _blocked(k, block)  # (B, H, nb, s, D)
    vb = _blocked(key_valid, block)  # (B, H, nb, s)
    counts = vb.sum(-1)  # (B, H, nb)
    sums = (kb * vb[..., None].to(k.dtype)).sum(3)  # (B, H, nb, D)
    return sums / counts.clamp(min=1)[..., None].to(k.dtype), counts > 0


@torch.no_grad()
def choose_blocks(q: torch.Tensor, means: torch.Tensor, has_keys: torch.Tensor, block: int, top_k: int,
                  causal: bool):
    """The gate: for every query, the ``top_k`` blocks (other than its own) with the highest ``q . mean key``.

    q (B, H, N, D), means (B, H, nb, D), has_keys (B, H, nb). Returns chosen (B, H, N, k) block numbers and
    chosen_ok (B, H, N, k) bool (False where the query had fewer than k candidates), k = min(top_k, nb - 1).
    """
    batch, heads, length, _ = q.shape
    blocks = means.shape[2]
    k = min(top_k, blocks - 1)
    if k <= 0:
        empty = torch.zeros(batch, heads, length, 0, dtype=torch.long, device=q.device)
        return empty, empty.bool()
    own = torch.arange(length, device=q.device) // block  # (N,)
    candidates = torch.arange(blocks, device=q.device)  # (nb,)
    chosen, chosen_ok = [], []
    for start in range(0, length, _GATE_CHUNK):
        stop = min(start + _GATE_CHUNK, length)
        gate = torch.einsum("bhnd,bhud->bhnu", q[:, :, start:stop].float(), means.float())  # (B, H, c, nb)
        mine = own[start:stop, None]  # (c, 1)
        allowed = candidates[None, :] < mine if causal else candidates[None, :] != mine  # (c, nb)
        allowed = allowed & has_keys[:, :, None, :]  # (B, H, c, nb)
        gate = gate.masked_fill(~allowed, float("-inf"))
        best = gate.topk(k, dim=-1)  # (B, H, c, k)
        chosen.append(best.indices)
        chosen_ok.append(torch.isfinite(best.values))
    return torch.cat(chosen, dim=2), torch.cat(chosen_ok, dim=2)


def _tiles(pair_block: torch.Tensor, groups: int, tile: int):
    """Lay (query, block) pairs out in tiles of at most ``tile`` pairs that share a block.

    ``pair_block`` (P,) is each pair's flat block number in [0, groups). Returns ``slot`` (P,), the flat
    position (tile * tile_size + row) of each pair, ``tile_block`` (T,) the block of each tile, and T.
    """
    order = torch.argsort(pair_block, stable=True)  # (P,) pairs grouped by block
    counts = torch.bincount(pair_block, minlength=groups)  # (groups,)
    starts = torch.cumsum(counts, 0) - counts  # first sorted pair of each block
    tiles_per_block = (counts + tile - 1) // tile  # (groups,)
    first_tile = torch.cumsum(tiles_per_block, 0) - tiles_per_block  # (groups,)
    num_tiles = int(tiles_per_block.sum())
    sorted_block = pair_block[order]
    rank = torch.arange(order.numel(), device=order.device) - starts[sorted_block]  # place within its block
    sorted_slot = (first_tile[sorted_block] + rank // tile) * tile + rank % tile
    slot = torch.empty_like(sorted_slot).scatter_(0, order, sorted_slot)  # back in pair order
    tile_block = torch.repeat_interleave(torch.arange(groups, device=order.device), tiles_per_block)  # (T,)
    return slot, tile_block, num_tiles


def _chosen_block_attention(q, k, v, key_valid, chosen, chosen_ok, block: int, scale: float, tile: int):
    """Attention of every query over each of its chosen blocks separately.

    Returns per (query, choice) outputs (B, H, N, kc, Dv) and log-sum-exps (B, H, N, kc) (very negative where
    the choice is empty), plus the probabilities (P, block) and pair layout for the weights.
    """
    batch, heads, length, dim = q.shape
    value_dim = v.shape[-1]
    kc = chosen.shape[-1]
    blocks = math.ceil(length / block)
    lse_dtype = torch.promote_types(q.dtype, torch.float32)
    flat_ok = chosen_ok.reshape(-1)  # (B*H*N*kc,)
    grid_index = flat_ok.nonzero().squeeze(1)  # (P,) index of each real (query, choice) pair in the grid
    query_row = grid_index // kc  # (P,) row in the flattened (B*H*N) queries
    head_row = query_row // length  # (P,) which (batch, head)
    pair_block = head_row * blocks + chosen.reshape(-1)[grid_index]  # (P,) row in the flattened (B*H*nb) blocks
    slot, tile_block, num_tiles = _tiles(pair_block, batch * heads * blocks, tile)
    # which query sits at each tile row; empty rows read an appended zero query
    table = torch.full((num_tiles * tile,), batch * heads * length, dtype=torch.long, device=q.device)
    table[slot] = query_row
    q_rows = torch.cat([q.reshape(-1, dim), q.new_zeros(1, dim)])  # (B*H*N + 1, D)
    q_tiles = q_rows.index_select(0, table).view(num_tiles, tile, dim)  # (T, tile, D)
    k_blocks = _blocked(k, block).reshape(-1, block, dim)  # (B*H*nb, s, D)
    v_blocks = _blocked(v, block).reshape(-1, block, value_dim)  # (B*H*nb, s, Dv)
    key_ok = _blocked(key_valid, block).reshape(-1, block)  # (B*H*nb, s)
    k_tiles = k_blocks.index_select(0, tile_block)  # (T, s, D)
    v_tiles = v_blocks.index_select(0, tile_block)  # (T, s, Dv)
    mask = torch.zeros(key_ok.shape, dtype=lse_dtype, device=q.device).masked_fill_(~key_ok, _neg(lse_dtype))
    scores = torch.baddbmm(mask.index_select(0, tile_block)[:, None, :],
                           q_tiles.to(lse_dtype), k_tiles.transpose(1, 2).to(lse_dtype), alpha=scale)  # (T, tile, s)
    lse_tiles = torch.logsumexp(scores, dim=-1)  # (T, tile)
    probs = torch.exp(scores - lse_tiles[..., None])  # (T, tile, s): a chosen block always has a real key
    out_tiles = torch.bmm(probs.to(v.dtype), v_tiles)  # (T, tile, Dv)
    pair_out = out_tiles.reshape(-1, value_dim).index_select(0, slot)  # (P, Dv)
    pair_lse = lse_tiles.reshape(-1).index_select(0, slot)  # (P,)
    grid = batch * heads * length * kc
    out = v.new_zeros(grid, value_dim).index_copy(0, grid_index, pair_out)  # (B*H*N*kc, Dv)
    lse = torch.full((grid,), _neg(lse_dtype), dtype=lse_dtype, device=q.device).index_copy(0, grid_index, pair_lse)
    pair_probs = probs.detach().reshape(-1, block).index_select(0, slot)  # (P, s)
    return (out.view(batch, heads, length, kc, value_dim), lse.view(batch, heads, length, kc),
            (grid_index, pair_block, pair_probs))


def block_routed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block: int,
    top_k: int,
    *,
    causal: bool,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    tile: int = 64,
    return_weights: bool = False,
):
    """MoBA-style block-routed attention (module docstring: which keys a query sees).

    Args:
        q, k, v: (B, H, N, D) (v may have its own last dim).
        block: positions per block.
        top_k: blocks chosen by the gate besides the query's own (0: own block only).
        causal: choose among complete past blocks and mask the own block's future.
        key_padding_mask: optional (B, N) bool, True marks padding.
        scale: score scale, default ``D ** -0.5``.
        tile: queries per dense product in the chosen-block pass (a speed knob; results do not depend on it).
        return_weights: also return detached :class:`AttentionWeights` (rows: queries; slots: the own block's
            band, then each chosen block's keys).

    Returns:
        out (B, H, N, Dv), or ``(out, weights)``.
    """
    check_qkv(q, k, v)
    check_positive("block", block)
    check_positive("tile", tile)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be a non-negative int, got {top_k!r}")
    batch, heads, length, dim = q.shape
    check_padding_mask(key_padding_mask, batch, length, q.device)
    scale = dim**-0.5 if scale is None else float(scale)
    if length == 0:
        out = q.new_zeros(batch, heads, 0, v.shape[-1])
        return (out, AttentionWeights("block_routed", (), q.new_zeros(batch, heads, 0, 0))) if return_weights else out
    if key_padding_mask is None:
        key_valid = torch.ones(batch, heads, length, dtype=torch.bool, device=q.device)
    else:
        key_valid = (~key_padding_mask)[:, None].expand(batch, heads, length)
    reach = min(block, length) - 1
    segments = (torch.arange(length, device=q.device) // block).expand(batch, heads, length)  # (B, H, N)
    own_out, own_lse = banded_attention(q, k, v, reach, 0 if causal else reach, key_valid, segments=segments,
                                        scale=scale, return_lse=True)  # (B, H, N, Dv), (B, H, N)
    means, has_keys = block_means(k.detach(), key_valid, block)
    chosen, chosen_ok = choose_blocks(q.detach(), means, has_keys, block, top_k, causal)  # (B, H, N, kc)
    if chosen.shape[-1] == 0 or not bool(chosen_ok.any()):
        out = own_out
        pieces = None
    else:
        pair_out, pair_lse, pieces = _chosen_block_attention(q, k, v, key_valid, chosen, chosen_ok, block, scale,
                                                             tile)
        lse = torch.cat([own_lse[..., None].to(pair_lse.dtype), pair_lse], dim=-1)  # (B, H, N, 1 + kc)
        share = torch.softmax(lse, dim=-1)  # each part's share of the query's single softmax
        out = share[..., :1].to(v.dtype) * own_out + (share[..., 1:, None].to(v.dtype) * pair_out).sum(3)
        # a query that sees no real key at all (its own block and choices all padding) outputs zeros
        out = torch.where((lse > _neg(lse.dtype) / 4).any(-1, keepdim=True), out, torch.zeros_like(out))
    if not return_weights:
        return out
    return out, _weights(q, k, key_valid, segments, reach, causal, scale, block, chosen, pieces, own_lse,
                         None if pieces is None else lse)


@torch.no_grad()
def _weights(q, k, key_valid, segments, reach, causal, scale, block, chosen, pieces, own_lse, lse):
    """Detached weights: each query's own-block band and its chosen blocks' keys, scaled by their shares."""
    batch, heads, length, _ = q.shape
    band_right = 0 if causal else reach
    _, band = banded_attention(q, k, q.new_zeros(batch, heads, length, 1), reach, band_right, key_valid,
                               segments=segments, scale=scale, return_weights=True)  # (B, H, N, L+R+1)
    positions = torch.arange(length, device=q.device)
    band_keys = positions[:, None] - reach + torch.arange(reach + band_right + 1, device=q.device)  # (N, L+R+1)
    band_keys = band_keys.expand(batch, heads, -1, -1)
    if pieces is None:
        weights, keys = band, band_keys
    else:
        share = torch.softmax(lse, dim=-1)  # (B, H, N, 1 + kc)
        kc = chosen.shape[-1]
        grid_index, pair_block, pair_probs = pieces
        chosen_weights = q.new_zeros(batch * heads * length * kc, block)
        chosen_weights[grid_index] = pair_probs.to(q.dtype)
        chosen_weights = chosen_weights.view(batch, heads, length, kc, block) * share[..., 1:, None].to(q.dtype)
        chosen_keys = (chosen[..., None] * block + torch.arange(block, device=q.device))  # (B, H, N, kc, s)
        weights = torch.cat([band * share[..., :1].to(q.dtype), chosen_weights.flatten(3)], dim=-1)
        keys = torch.cat([band_keys, chosen_keys.flatten(3)], dim=-1)
    keys = torch.where((weights > 0) & (keys >= 0) & (keys < length), keys, torch.full_like(keys, -1))
    return AttentionWeights("block_routed", (), weights, key_index=keys)
