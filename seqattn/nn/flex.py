"""The sparse heads on FlexAttention: block masks built from each head's pattern, no host reads.

FlexAttention (``torch.nn.attention.flex_attention``) runs one fused kernel over the (query block, key block)
tiles a :class:`BlockMask` lists, applying a ``mask_mod`` inside the tiles that are only partly allowed and
skipping it in "full" tiles. Building that mask with ``create_block_mask`` would evaluate the pattern at all
N x N positions; here the tile lists come straight from the pattern's geometry, with tensor operations only
(nothing is read back to the host, so the call can be captured by ``torch.compile`` or a CUDA graph):

- a band ``i - L <= j <= i + R`` (local, per-head windows, dilated subsequences, the band of global heads, the
  own block of block-routed heads, and causal routing on tokens sorted by cluster, with segment ids) lists,
  for query tile t, the key tiles from ``(t * T - L) // T`` to ``((t + 1) * T - 1 + R) // T``; a tile is full
  when the band covers it wholly, it lies inside the sequence, and all of its keys are real (no padding, no
  segment ids);
- block routing (MoBA) lists, per query tile, the union of its queries' own and chosen key tiles.

Each call returns what the chunked kernel returns (:func:`seqattn.nn.local.banded_attention`): zeros for a
query that sees no key, and a log-sum-exp that is a large finite negative there. The softmax is accumulated
in float32 for bf16/fp16 inputs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .numerics import masking_value

TILE = 128  # queries and keys per FlexAttention tile

try:  # torch >= 2.5
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError:  # pragma: no cover - older torch
    BlockMask = flex_attention = None

try:  # torch >= 2.9 asks for the log-sum-exp this way; older releases take return_lse
    from torch.nn.attention.flex_attention import AuxRequest
except ImportError:  # pragma: no cover
    AuxRequest = None

_compiled = None


def available() -> bool:
    return flex_attention is not None


def _is_fake(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


def _kernel(q: torch.Tensor):
    """The compiled FlexAttention on real GPU tensors; inside a compiled region, under fake tensors, or on
    the CPU the plain function (traced by the outer compile, or PyTorch's reference implementation)."""
    global _compiled
    if torch.compiler.is_compiling() or _is_fake(q) or q.device.type == "cpu":
        return flex_attention
    if _compiled is None:  # shapes become dynamic after the first new length: batches of any length, no recompiles
        _compiled = torch.compile(flex_attention)
    return _compiled


def run_flex(q, k, v, block_mask, *, scale: float, score_mod=None, return_lse: bool = False):
    """FlexAttention on (B, H, N, D) inputs; ``(out, lse)`` with ``return_lse`` (lse float32, or float64 for
    float64 inputs; the masking value where a query sees no key)."""
    if flex_attention is None:
        raise RuntimeError(f"torch {torch.__version__} has no FlexAttention: force the chunked attention backend "
                           "(SEQATTN_ATTENTION_BACKEND=chunked)")
    k, v = k.to(q.dtype), v.to(q.dtype)
    kernel = _kernel(q)
    if _is_fake(q) and torch.is_grad_enabled():
        # The CPU-only device checks run models on fake CUDA tensors, where FlexAttention's autograd wrapper
        # asks for a real CUDA context: there the forward is checked without recording its graph.
        with torch.no_grad():
            return run_flex(q, k, v, block_mask, scale=scale, score_mod=score_mod, return_lse=return_lse)
    if not return_lse:
        return kernel(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    if AuxRequest is not None:
        out, aux = kernel(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
                          return_aux=AuxRequest(lse=True))
        lse = aux.lse
    else:  # pragma: no cover - torch < 2.9
        out, lse = kernel(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, return_lse=True)
    lse_dtype = torch.promote_types(q.dtype, torch.float32)
    lse = lse.to(lse_dtype)
    return out, torch.where(torch.isfinite(lse), lse, torch.full_like(lse, masking_value(lse_dtype)))


def _pad_keys(x: torch.Tensor, length: int, value) -> torch.Tensor:
    """(B, H, N) padded along N to ``length`` with ``value``, so the mask never indexes past the end."""
    return F.pad(x, (0, length - x.shape[-1]), value=value)


def _ordered(selected: torch.Tensor, candidates: torch.Tensor, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(count (..., rows) int32, indices (..., rows, tiles) int32): the selected candidates first, in order,
    the list padded to one entry per key tile (the compiled kernels size the key axis by it)."""
    order = torch.argsort((~selected).to(torch.int8), dim=-1, stable=True)  # selected entries first
    indices = torch.gather(candidates.expand_as(selected), -1, order)
    indices = F.pad(indices, (0, tiles - indices.shape[-1]))
    return selected.sum(-1).to(torch.int32), indices.to(torch.int32)


def band_block_mask(length: int, left: int, right: int, key_valid: torch.Tensor,
                    segments: torch.Tensor | None = None) -> BlockMask:
    """The block mask of ``i - left <= j <= i + right``, key ``j`` real (``key_valid`` (B, H, N) bool) and,
    with ``segments`` (B, H, N), of the query's own segment."""
    if segments is None and key_valid.shape[1] > 1 and key_valid.stride(1) == 0:
        key_valid = key_valid[:, :1]  # the same keys for every head: one mask, broadcast over heads
    batch, heads = key_valid.shape[:2]
    device = key_valid.device
    tiles = math.ceil(length / TILE)
    padded = tiles * TILE
    per_row = min(tiles, (TILE - 1 + left + right) // TILE + 2)  # most key tiles one query tile can touch
    query_tile = torch.arange(tiles, device=device)[:, None]  # (nq, 1)
    first = torch.clamp(torch.div(query_tile * TILE - left, TILE, rounding_mode="floor"), min=0)  # (nq, 1)
    last = torch.clamp(torch.div(query_tile * TILE + TILE - 1 + right, TILE, rounding_mode="floor"), max=tiles - 1)
    candidate = first + torch.arange(per_row, device=device)[None, :]  # (nq, M) key tiles
    inside = candidate <= last  # (nq, M)
    candidate = candidate.clamp(max=tiles - 1)
    # a tile the band covers for every query/key pair, with both tiles inside the sequence
    covered = (candidate * TILE >= query_tile * TILE + TILE - 1 - left) & \
              (candidate * TILE + TILE - 1 <= query_tile * TILE + right)
    whole = (candidate + 1) * TILE <= length
    covered = covered & whole & ((query_tile + 1) * TILE <= length)
    valid_pad = _pad_keys(key_valid, padded, False)  # (B, H, Np)
    tile_valid = valid_pad.view(batch, heads, tiles, TILE)
    any_key, all_keys = tile_valid.any(-1), tile_valid.all(-1)  # (B, H, nk)
    any_key = any_key[:, :, candidate]  # (B, H, nq, M)
    full = inside & covered & all_keys[:, :, candidate] if segments is None else torch.zeros_like(any_key)
    partial = inside & any_key & ~full
    num, indices = _ordered(partial, candidate, tiles)
    full_num, full_indices = _ordered(full, candidate, tiles)
    seg_pad = None if segments is None else _pad_keys(segments, padded, -1)

    shared = heads == 1  # the mask broadcasts over heads

    def mask_mod(b, h, q_idx, kv_idx):
        real = valid_pad[b, 0, kv_idx] if shared else valid_pad[b, h, kv_idx]
        allowed = (kv_idx >= q_idx - left) & (kv_idx <= q_idx + right) & real
        if seg_pad is not None:
            allowed = allowed & (seg_pad[b, h, q_idx] == seg_pad[b, h, kv_idx])
        return allowed

    return BlockMask.from_kv_blocks(num, indices, full_num, full_indices, BLOCK_SIZE=TILE, mask_mod=mask_mod,
                                    seq_lengths=(length, length))


def self_bias_mod(self_bias: float, like: torch.Tensor):
    """A score modification adding ``self_bias`` to each query's score for its own key (shared-QK routing).
    The bias is captured as a device scalar (made by a fill, no copy): a captured Python float would be a
    guarded constant that the compiler turns into a dynamic symbol once it sees two values."""
    bias = torch.full((), self_bias, dtype=torch.float32, device=like.device)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + torch.where(q_idx == kv_idx, bias, 0.0).to(score.dtype)

    return score_mod


def flex_band_attention(q, k, v, window_left: int, window_right: int, key_valid, *, segments=None,
                        scale: float, self_bias: float = 0.0, return_lse: bool = False):
    """:func:`seqattn.nn.local.banded_attention` (without weights) on FlexAttention."""
    length = q.shape[2]
    mask = band_block_mask(length, window_left, window_right, key_valid, segments)
    score_mod = self_bias_mod(self_bias, q) if self_bias else None
    return run_flex(q, k, v, mask, scale=scale, score_mod=score_mod, return_lse=return_lse)


def routed_block_mask(length: int, block: int, causal: bool, key_valid: torch.Tensor, chosen: torch.Tensor,
                      chosen_ok: torch.Tensor) -> BlockMask:
    """The block mask of block routing: query i sees its own block (``j <= i`` when causal) and the blocks
    ``chosen`` (B, H, N, k) where ``chosen_ok``, real keys only."""
    batch, heads = key_valid.shape[:2]
    device = key_valid.device
    tiles = math.ceil(length / TILE)
    padded = tiles * TILE
    choices = chosen.shape[-1]
    positions = torch.arange(length, device=device)
    own_block = positions // block  # (N,)
    # key tiles each query needs: those overlapping its own block and each chosen block
    needed = torch.zeros(batch, heads, tiles, tiles + 1, dtype=torch.int32, device=device)  # last column: sink
    flat_needed = needed.view(batch, heads, -1)  # (B, H, nq * (nk + 1))
    query_tile = (positions // TILE).expand(batch, heads, length)  # (B, H, N)

    def mark(first_key, last_key, ok):  # key range [first_key, last_key] (B, H, N) of each query, if ok
        span = (block + TILE - 1) // TILE + 1
        start = torch.div(first_key, TILE, rounding_mode="floor")
        stop = torch.div(last_key, TILE, rounding_mode="floor")
        for offset in range(span):
            tile = start + offset
            column = torch.where(ok & (tile <= stop), tile.clamp(max=tiles - 1), torch.full_like(tile, tiles))
            flat_needed.scatter_(2, query_tile * (tiles + 1) + column, torch.ones_like(column, dtype=torch.int32))

    own_first = (own_block * block).expand(batch, heads, length)
    own_last = (positions if causal else torch.clamp((own_block + 1) * block - 1, max=length - 1))
    mark(own_first, own_last.expand(batch, heads, length), torch.ones_like(own_first, dtype=torch.bool))
    for c in range(choices):
        first_key = chosen[..., c] * block
        mark(first_key, torch.clamp(first_key + block - 1, max=length - 1), chosen_ok[..., c])
    selected = needed[..., :tiles] > 0  # (B, H, nq, nk)
    candidate = torch.arange(tiles, device=device)
    num, indices = _ordered(selected, candidate, tiles)
    valid_pad = _pad_keys(key_valid, padded, False)
    chosen_pad = F.pad(chosen, (0, 0, 0, padded - length), value=-1)  # (B, H, Np, k)
    ok_pad = F.pad(chosen_ok, (0, 0, 0, padded - length), value=False)

    def mask_mod(b, h, q_idx, kv_idx):
        kv_block = kv_idx // block
        allowed = kv_block == q_idx // block
        if causal:
            allowed = allowed & (kv_idx <= q_idx)
        for c in range(choices):
            allowed = allowed | ((chosen_pad[b, h, q_idx, c] == kv_block) & ok_pad[b, h, q_idx, c])
        return allowed & valid_pad[b, h, kv_idx]

    return BlockMask.from_kv_blocks(num, indices, BLOCK_SIZE=TILE, mask_mod=mask_mod, seq_lengths=(length, length))


def flex_block_routed_attention(q, k, v, key_valid, chosen, chosen_ok, block: int, causal: bool, scale: float):
    """Block-routed attention (own block plus chosen blocks, one softmax) on FlexAttention."""
    mask = routed_block_mask(q.shape[2], block, causal, key_valid, chosen, chosen_ok)
    return run_flex(q, k, v, mask, scale=scale)
