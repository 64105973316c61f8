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

How it is computed, in O(N * (top_k + 1) * block) time and memory plus the gate's O(N * N / block * D):

- the own block is the banded kernel of :mod:`seqattn.nn.local` (window ``block - 1`` with the block number
  as segment id), which also returns each query's log-sum-exp;
- the chosen blocks go through a key-block-major pass: the (query, chosen block) pairs are sorted by block and
  cut into tiles of at most ``tile`` queries that all chose the same block, so each tile is one dense
  ``(tile x D) @ (D x block)`` product with the block's keys (MoBA's varlen grouping, on any device);
- each query's total log-sum-exp (own block and choices) goes back out to its tile rows, so the tiles'
  probabilities are already shares of the query's one softmax, and the weighted values are summed per query.
  Moving rows between the query layout and the tile layout is a gather in both directions (each query row is
  read by at most ``top_k`` tile rows), never an element-wise scatter-add.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .backend import attention_backend
from .checks import check_padding_mask, check_positive, check_qkv
from .flex import flex_block_routed_attention
from .local import banded_attention
from .numerics import key_validity, masking_value, merge_log_sum_exps
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


def _padded(x: torch.Tensor) -> torch.Tensor:
    """x with one zero row appended: the row a sentinel index reads."""
    return torch.cat([x, x.new_zeros(1, *x.shape[1:])])


class _Regroup(torch.autograd.Function):
    """``out[r] = x[index[r]]`` (a zero row where ``index[r]`` is the sentinel ``len(x)``), whose backward is a
    gather too: ``grad_x[i] = sum_c grad_out[readers[i, c]]`` over the (at most a few) rows that read row i.

    ``index_select`` would do the same forward, but its backward scatters-adds one small row at a time, which
    on CPU cost more than all the attention arithmetic of the routed blocks; each row here is read by at most
    ``readers.shape[1]`` rows, so the backward is that many gathers."""

    @staticmethod
    def forward(ctx, x, index, readers):
        ctx.save_for_backward(index, readers)
        return _padded(x).index_select(0, index)

    @staticmethod
    def backward(ctx, grad_out):
        index, readers = ctx.saved_tensors
        return _GatherSum.apply(grad_out, readers, index), None, None


class _GatherSum(torch.autograd.Function):
    """``out[i] = sum_c x[readers[i, c]]`` (sentinel ``len(x)`` reads zeros): the transpose of :class:`_Regroup`,
    whose backward is the single gather ``grad_x[r] = grad_out[index[r]]``."""

    @staticmethod
    def forward(ctx, x, readers, index):
        ctx.save_for_backward(index, readers)
        padded = _padded(x)
        out = padded.index_select(0, readers[:, 0])
        for column in range(1, readers.shape[1]):
            out += padded.index_select(0, readers[:, column])
        return out

    @staticmethod
    def backward(ctx, grad_out):
        index, readers = ctx.saved_tensors
        return _Regroup.apply(grad_out, index, readers), None, None


def _own_block_attention(q, k, v, key_valid, block: int, causal: bool, scale: float):
    """Every query over its own block's real keys (only earlier ones when causal), through the banded kernel
    with the block number as segment id. Returns out (B, H, N, Dv) and each query's differentiable
    log-sum-exp (B, H, N) (very negative where it sees no key). Measured faster on CPU than one dense
    (block x block) product per block, whose small matmuls run far below the banded kernel's rate."""
    batch, heads, length, _ = q.shape
    reach = min(block, length) - 1
    segments = (torch.arange(length, device=q.device) // block).expand(batch, heads, length)  # (B, H, N)
    return banded_attention(q, k, v, reach, 0 if causal else reach, key_valid, segments=segments, scale=scale,
                            return_lse=True)


class _BlockGather(torch.autograd.Function):
    """``blocks[index]`` for whole blocks (G, s, D) -> (T, s, D), with the backward as one ``index_add_`` of
    whole blocks (``index_select``'s own backward scatters element by element, several times slower here)."""

    @staticmethod
    def forward(ctx, blocks, index):
        ctx.save_for_backward(index)
        ctx.count = blocks.shape[0]
        return blocks.index_select(0, index)

    @staticmethod
    def backward(ctx, grad_out):
        (index,) = ctx.saved_tensors
        grad = grad_out.new_zeros(ctx.count, *grad_out.shape[1:])
        return grad.index_add_(0, index, grad_out.contiguous()), None


def _routed_attention(q, k, v, key_valid, chosen, chosen_ok, block: int, scale: float, tile: int, own_out,
                      own_lse):
    """Merge each query's own-block result with its chosen blocks into one softmax.

    The chosen blocks go through the tile layout of :func:`_tiles`: scores of every tile row against its block,
    each row's log-sum-exp brought back to its query, the query's total log-sum-exp (own block + choices) sent
    out to its tile rows again, so every tile row's probabilities are already its share of the query's
    single softmax; the weighted values are then summed back per query. Returns out (B, H, N, Dv) and, for the
    weights, (own share (B, H, N), grid index, tile probabilities (T, tile, s), each pair's tile row).
    """
    batch, heads, length, dim = q.shape
    value_dim = v.shape[-1]
    kc = chosen.shape[-1]
    blocks = math.ceil(length / block)
    lse_dtype = torch.promote_types(q.dtype, torch.float32)
    rows = batch * heads * length
    flat_ok = chosen_ok.reshape(-1)  # (B*H*N*kc,) the (query, choice) grid
    grid_index = flat_ok.nonzero().squeeze(1)  # (P,) index of each real (query, choice) pair in the grid
    query_row = grid_index // kc  # (P,) row in the flattened (B*H*N) queries
    pair_block = (query_row // length) * blocks + chosen.reshape(-1)[grid_index]  # (P,) row of (B*H*nb) blocks
    slot, tile_block, num_tiles = _tiles(pair_block, batch * heads * blocks, tile)
    # tile row -> query row (sentinel: a zero row); per query, the tile rows of its choices (sentinel: none)
    table = torch.full((num_tiles * tile,), rows, dtype=torch.long, device=q.device)
    table[slot] = query_row
    readers = torch.full((rows * kc,), num_tiles * tile, dtype=torch.long, device=q.device)
    readers[grid_index] = slot
    readers = readers.view(rows, kc)
    q_tiles = _Regroup.apply(q.reshape(rows, dim), table, readers).view(num_tiles, tile, dim)  # (T, tile, D)
    k_tiles = _BlockGather.apply(_blocked(k, block).reshape(-1, block, dim), tile_block)  # (T, s, D)
    v_tiles = _BlockGather.apply(_blocked(v, block).reshape(-1, block, value_dim), tile_block)  # (T, s, Dv)
    key_ok = _blocked(key_valid, block).reshape(-1, block)  # (B*H*nb, s)
    mask = torch.zeros(key_ok.shape, dtype=lse_dtype, device=q.device).masked_fill_(~key_ok, masking_value(lse_dtype))
    scores = torch.baddbmm(mask.index_select(0, tile_block)[:, None, :],
                           q_tiles.to(lse_dtype), k_tiles.transpose(1, 2).to(lse_dtype), alpha=scale)  # (T, tile, s)
    tile_lse = torch.logsumexp(scores, dim=-1).reshape(-1, 1)  # (T*tile, 1); a chosen block has a real key
    choice_lse = _Regroup.apply(tile_lse, readers.view(-1), table[:, None] * kc + _choice_of(slot, grid_index,
                                                                                             kc, num_tiles * tile))
    choice_lse = choice_lse.view(rows, kc).masked_fill(~chosen_ok.reshape(rows, kc), masking_value(lse_dtype))
    parts = torch.cat([own_lse.reshape(rows, 1).to(lse_dtype), choice_lse], dim=1)  # (B*H*N, 1 + kc)
    total, shares = merge_log_sum_exps(parts)  # (B*H*N, 1) the query's whole softmax, (B*H*N, 1 + kc)
    own_share = shares[:, :1]  # (B*H*N, 1)
    row_total = _Regroup.apply(total, table, readers).view(num_tiles, tile, 1)  # (T, tile, 1)
    probs = torch.exp(scores - row_total)  # (T, tile, s): shares of each query's single softmax
    weighted = torch.bmm(probs.to(v.dtype), v_tiles).reshape(-1, value_dim)  # (T*tile, Dv)
    routed = _GatherSum.apply(weighted, readers, table)  # (B*H*N, Dv)
    out = own_out.reshape(rows, value_dim) * own_share.to(v.dtype) + routed
    # a query that sees no real key at all (its own block and choices all padding) outputs zeros
    seen = (parts > masking_value(lse_dtype) / 4).any(1, keepdim=True)  # (B*H*N, 1)
    out = torch.where(seen, out, torch.zeros_like(out)).view(batch, heads, length, value_dim)
    return out, (own_share.detach().view(batch, heads, length), grid_index, probs.detach(), slot)


def _choice_of(slot: torch.Tensor, grid_index: torch.Tensor, kc: int, tile_rows: int) -> torch.Tensor:
    """(T*tile, 1) the choice number (0..kc-1) each tile row holds, so that ``table * kc + choice`` is the
    row's place in the (query, choice) grid (empty tile rows: 0, with the sentinel query the sentinel row)."""
    choice = torch.zeros(tile_rows, 1, dtype=torch.long, device=slot.device)
    choice[slot, 0] = grid_index % kc
    return choice


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
    key_valid = key_validity(key_padding_mask, batch, length, q.device, heads)
    means, has_keys = block_means(k.detach(), key_valid, block)
    chosen, chosen_ok = choose_blocks(q.detach(), means, has_keys, block, top_k, causal)  # (B, H, N, kc)
    if not return_weights and attention_backend(q.device) == "flex":  # one fused softmax, no host reads
        return flex_block_routed_attention(q, k, v, key_valid, chosen, chosen_ok, block, causal, scale)
    own_out, own_lse = _own_block_attention(q, k, v, key_valid, block, causal, scale)  # (B, H, N, Dv), (B, H, N)
    if chosen.shape[-1] == 0 or not bool(chosen_ok.any()):
        out, pieces = own_out, None
    else:
        out, pieces = _routed_attention(q, k, v, key_valid, chosen, chosen_ok, block, scale, tile, own_out, own_lse)
    if not return_weights:
        return out
    return out, _weights(q, k, key_valid, causal, scale, block, chosen, pieces)


@torch.no_grad()
def _weights(q, k, key_valid, causal, scale, block, chosen, pieces):
    """Detached weights: each query's own-block band and its chosen blocks' keys, scaled by their shares."""
    batch, heads, length, _ = q.shape
    reach = min(block, length) - 1
    segments = (torch.arange(length, device=q.device) // block).expand(batch, heads, length)  # (B, H, N)
    band_right = 0 if causal else reach
    _, band = banded_attention(q, k, q.new_zeros(batch, heads, length, 1), reach, band_right, key_valid,
                               segments=segments, scale=scale, return_weights=True)  # (B, H, N, L+R+1)
    positions = torch.arange(length, device=q.device)
    band_keys = positions[:, None] - reach + torch.arange(reach + band_right + 1, device=q.device)  # (N, L+R+1)
    band_keys = band_keys.expand(batch, heads, -1, -1)
    if pieces is None:
        weights, keys = band, band_keys
    else:
        own_share, grid_index, tile_probs, slot = pieces
        pair_probs = tile_probs.reshape(-1, block).index_select(0, slot)  # (P, s)
        kc = chosen.shape[-1]
        chosen_weights = q.new_zeros(batch * heads * length * kc, block)
        chosen_weights[grid_index] = pair_probs.to(q.dtype)  # already shares of the whole softmax
        chosen_weights = chosen_weights.view(batch, heads, length, kc * block)
        chosen_keys = (chosen[..., None] * block + torch.arange(block, device=q.device))  # (B, H, N, kc, s)
        weights = torch.cat([band * own_share[..., None].to(q.dtype), chosen_weights], dim=-1)
        keys = torch.cat([band_keys, chosen_keys.flatten(3)], dim=-1)
    keys = torch.where((weights > 0) & (keys >= 0) & (keys < length), keys, torch.full_like(keys, -1))
    return AttentionWeights("block_routed", (), weights, key_index=keys)
