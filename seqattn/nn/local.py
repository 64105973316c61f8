"""Exact sliding-window (banded) attention in O(N * window) time and memory.

Convention (docs/DESIGN.md, section 2): query i may attend key j iff ``i - window_left <= j <= i + window_right``
and key j is not padding. ``window_right = 0`` is causal. A query whose visible keys are all padding
outputs zeros.

How it works. The sequence is cut into blocks of ``b`` queries. The queries of the block starting at ``s``
see keys ``s - L .. s + b - 1 + R`` and nothing else, so each query block is multiplied against one contiguous
key window of ``W = b + L + R`` keys (any L and R: the window need not be whole blocks, so a head's cost
follows its window, ±30 costing less than ±64). Inside that window the exact band is the same boolean pattern
for every block (it depends only on offsets), so one ``(b, W)`` band mask is shared by all blocks; sequence
edges and padding enter as a per-key validity mask.

Blocks are processed in chunks that fit in cache, by a custom autograd function: the forward keeps the
softmax probabilities (O(N * W) memory, linear in N) and the backward reuses them, folding the
per-window key/value gradients back onto the sequence. No N x N tensor is ever built.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import flex, native_band
from .backend import attention_backend
from .band_layout import BlockLayout, band_mask, make_layout
from .checks import check_head_windows, check_padding_mask, check_positive, check_qkv
from .numerics import key_validity, masking_value

# Elements of one chunk's score tensor (all batch*heads together). About 4 MB in fp32: big enough to keep
# the batched matmuls efficient, small enough that scores, softmax and the second matmul stay in cache.
_CHUNK_SCORE_ELEMENTS = 1 << 20


class _FlatLayout:
    """All (batch, head) sequences laid end to end so one strided view gives every block's key window.

    Keys of all B*H heads are stored back to back, each padded to ``nb * b`` rows, with ``L`` zero rows in
    front and zeros behind the whole buffer: ``flat = [0 | head 0 | head 1 | ... | 0]``. Global query block g
    (head g // nb) then sees the contiguous rows ``[g*b, g*b + W)`` of the buffer, so the windows of *all*
    blocks are one overlapping ``as_strided`` view and a single ``bmm`` computes the scores of a whole chunk
    of blocks across heads without copying keys. A window that reaches past its own head reads a neighbour's
    rows; the per-key validity mask disables exactly those keys. The buffer holds ``G + slots - 1`` whole
    blocks of rows, so that the backward can fold window slot s of block g onto block ``g + s``.
    """

    def __init__(self, layout: BlockLayout, batch: int, heads: int):
        self.layout = layout
        self.batch, self.heads = batch, heads
        self.blocks = batch * heads * layout.num_blocks  # G, global query blocks
        self.rows = (self.blocks + layout.slots - 1) * layout.block  # rows of the flat key buffer (>= L + G*b + R)
        self.front = layout.window_left

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, N, D) -> (G, b, D); a free view when N is a multiple of b and x is contiguous."""
        lay = self.layout
        dim = x.shape[-1]
        if lay.num_blocks * lay.block == lay.length and x.is_contiguous():
            return x.view(self.blocks, lay.block, dim)  # (G, b, D)
        out = x.new_zeros(self.batch, self.heads, lay.num_blocks * lay.block, dim)  # (B, H, nb*b, D)
        out[:, :, : lay.length] = x
        return out.view(self.blocks, lay.block, dim)  # (G, b, D)

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, N, D) -> flat key buffer (rows, D), written with a single copy."""
        lay = self.layout
        dim = x.shape[-1]
        flat = x.new_empty(self.rows, dim)
        body = flat[self.front : self.front + self.blocks * lay.block]  # (G*b, D)
        body = body.view(self.batch, self.heads, lay.num_blocks * lay.block, dim)  # (B, H, nb*b, D)
        body[:, :, : lay.length] = x
        body[:, :, lay.length :] = 0
        flat[: self.front] = 0
        flat[self.front + self.blocks * lay.block :] = 0
        return flat

    def windows(self, flat: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Overlapping view of the key windows of global blocks [start, stop): (c, W, D), no copy."""
        lay = self.layout
        dim = flat.shape[-1]
        return flat.as_strided((stop - start, lay.window, dim), (lay.block * dim, dim, 1), start * lay.block * dim)

    def unflatten_queries(self, x: torch.Tensor) -> torch.Tensor:
        """(G, b, D) -> (B, H, N, D)."""
        lay = self.layout
        x = x.view(self.batch, self.heads, lay.num_blocks * lay.block, x.shape[-1])  # (B, H, nb*b, D)
        return x[:, :, : lay.length]

    def unflatten_keys(self, flat: torch.Tensor) -> torch.Tensor:
        """Flat key-shaped buffer (rows, D) -> (B, H, N, D), dropping the padding rows."""
        lay = self.layout
        x = flat[self.front : self.front + self.blocks * lay.block]  # (G*b, D)
        return self.unflatten_queries(x.view(self.blocks, lay.block, flat.shape[-1]))

    def masks(self, key_valid: torch.Tensor, segments: torch.Tensor | None, self_bias: float, dtype) -> _Masks:
        """Build the additive masks of every window once; both passes reuse them.

        ``key_valid`` is (B, H, N) bool. Rows of other heads and positions outside [0, N) get the masking value.
        """
        lay = self.layout
        back = lay.padded_keys - self.front - lay.length
        valid = F.pad(key_valid, (self.front, back))  # (B, H, Kp): each sequence in padded key coordinates
        bias = torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill_(~valid, masking_value(dtype))
        key_win = bias.unfold(2, lay.window, lay.block).reshape(self.blocks, lay.window)  # (G, W)
        # Visible keys of query i: a difference of prefix sums over [i - L, i + R] in padded coordinates.
        counts = F.pad(valid.to(torch.int32).cumsum(2), (1, 0))  # (B, H, Kp + 1)
        pos = torch.arange(lay.num_blocks * lay.block, device=valid.device) + self.front  # (nb*b,)
        visible = counts[..., pos + lay.window_right + 1] - counts[..., pos - lay.window_left] > 0  # (B, H, nb*b)
        band = _band_bias(lay, dtype, valid.device)  # (b, W)
        if self_bias:
            diag = torch.arange(lay.block, device=valid.device)
            band[diag, diag + lay.window_left] += self_bias
        seg_q = seg_win = None
        if segments is not None:
            seg = F.pad(segments, (self.front, back), value=-1)  # (B, H, Kp)
            seg_win = seg.unfold(2, lay.window, lay.block).reshape(self.blocks, lay.window)  # (G, W)
            seg_q = F.pad(segments, (0, lay.num_blocks * lay.block - lay.length), value=-2)
            seg_q = seg_q.reshape(self.blocks, lay.block)  # (G, b)
        return _Masks(key_win, visible.reshape(self.blocks, lay.block), band, seg_q, seg_win)


@dataclass
class _Masks:
    """Everything that decides which scores are masked, in global-block coordinates."""

    key_win: torch.Tensor  # (G, W) additive: 0 for a real key of the window's own sequence, else a large negative
    visible: torch.Tensor  # (G, b) bool: the query sees at least one real key in its band
    band: torch.Tensor  # (b, W) additive band mask (plus the optional self-score bias on its diagonal)
    seg_q: torch.Tensor | None  # (G, b) segment id of each query, or None
    seg_win: torch.Tensor | None  # (G, W) segment id of each window key (-1 outside the sequence)



def host_any(flag: torch.Tensor) -> bool:
    """Whether any element of ``flag`` is true, when the answer costs nothing: on the CPU, outside a compiled
    graph. Elsewhere reading it would wait for the device (or break the graph), so the answer is True and the
    caller does the (harmless) work anyway."""
    return flag.device.type != "cpu" or torch.compiler.is_compiling() or bool(flag.any())


def _chunk_blocks(layout: BlockLayout, total_blocks: int) -> int:
    per_block = layout.block * layout.window
    return max(1, min(total_blocks, _CHUNK_SCORE_ELEMENTS // max(per_block, 1)))


def _band_bias(layout: BlockLayout, dtype, device) -> torch.Tensor:
    """(b, W) additive band mask: 0 inside the band, a large negative outside."""
    zero = torch.zeros((), dtype=dtype, device=device)
    return torch.where(band_mask(layout, device), zero, torch.full((), masking_value(dtype), dtype=dtype,
                                                                   device=device))


def _chunk_probs(flat: _FlatLayout, masks: _Masks, qg, kf, scale, start, stop, scores, probs,
                 lse: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax probabilities of global blocks [start, stop), written into ``probs`` (c, b, W); with ``lse``
    (G, b) (float32 or float64), each row's log-sum-exp of scores goes to ``lse[start:stop]`` (the masking value
    for a row that sees no key)."""
    kw = flat.windows(kf, start, stop)  # (c, W, D)
    bias = masks.band.expand(stop - start, -1, -1)  # (c, b, W)
    chunk_keys = masks.key_win[start:stop]  # (c, W)
    if host_any(chunk_keys != 0):  # an edge, padding, or a neighbour's rows inside some window
        bias = bias + chunk_keys[:, None, :]
    torch.baddbmm(bias, qg[start:stop], kw.transpose(1, 2), alpha=scale, out=scores)
    rows = masks.visible[start:stop]  # (c, b)
    if masks.seg_q is not None:
        other = masks.seg_q[start:stop, :, None] != masks.seg_win[start:stop, None, :]  # (c, b, W)
        scores.masked_fill_(other, masking_value(scores.dtype))  # only keys of the query's own segment
        rows = rows & (scores.amax(-1) > masking_value(scores.dtype) / 4)
    full_probs = torch.softmax(scores, dim=-1, out=probs)  # float32 or float64: half inputs are upcast before
    if lse is not None:
        # log-sum-exp from the softmax already computed: at a row's largest score, p = exp(max - lse), so
        # lse = max - log(max p) (max p >= 1 / W: no precision lost; a separate logsumexp pass costs as
        # much as the rest of the forward on CPU)
        peak = scores.amax(-1).to(lse.dtype) - torch.log(full_probs.amax(-1).to(lse.dtype))  # (c, b)
        lse[start:stop] = peak.masked_fill_(~rows, masking_value(lse.dtype))
    if host_any(~rows):
        probs.masked_fill_(~rows[:, :, None], 0)  # queries that see no key output zeros
    return probs


def _iter_chunk_probs(
    flat: _FlatLayout,
    masks: _Masks,
    qg,
    kf,
    scale,
    probs_out: torch.Tensor | None = None,
    lse: torch.Tensor | None = None,
):
    """Yield ``(start, stop, probs, scratch)`` for every chunk of global blocks.

    ``probs`` (c, b, W) are the chunk's softmax probabilities, written into ``probs_out[start:stop]`` when a
    (G, b, W) buffer is given; ``scratch`` is a chunk-sized buffer allocated once and reused.
    """
    layout = flat.layout
    step = _chunk_blocks(layout, flat.blocks)
    buffers = [qg.new_empty(step, layout.block, layout.window) for _ in range(1 if probs_out is not None else 2)]
    for start in range(0, flat.blocks, step):
        stop = min(start + step, flat.blocks)
        scores = buffers[0][: stop - start]
        probs = probs_out[start:stop] if probs_out is not None else buffers[1][: stop - start]
        yield start, stop, _chunk_probs(flat, masks, qg, kf, scale, start, stop, scores, probs, lse), scores


class _BandedAttention(torch.autograd.Function):
    """Chunked band attention: forward and backward run chunk by chunk over cache-sized slabs of blocks;
    the probabilities (G, b, W) are kept between them, everything else is O(N * D).

    It returns the output and each row's log-sum-exp of scores (B, H, N) float32, so that a caller can merge
    the band with other keys exactly (global tokens); the log-sum-exp is differentiable too: its gradient
    with respect to a score is that score's probability."""

    @staticmethod
    def forward(
        ctx, q, k, v, layout: BlockLayout, key_valid, segments, scale: float, self_bias: float, with_lse: bool = False
    ):
        flat = _FlatLayout(layout, *q.shape[:2])
        qg = flat.queries(q)  # (G, b, D)
        kf, vf = flat.keys(k), flat.keys(v)  # (rows, D)
        masks = flat.masks(key_valid, segments, self_bias, q.dtype)
        out = q.new_empty(flat.blocks, layout.block, v.shape[-1])  # (G, b, Dv)
        # For a backward the probabilities are kept: N * W values per head, linear in N, and it saves
        # recomputing every score and softmax there (about 15% of a forward+backward). Inference keeps only
        # one chunk's worth (for an hour of audio the kept probabilities would be 3 GB per layer).
        needs_backward = any(ctx.needs_input_grad[:3])
        probs = q.new_empty(flat.blocks, layout.block, layout.window) if needs_backward else None  # (G, b, W)
        lse_dtype = torch.promote_types(q.dtype, torch.float32)  # float32 for half types, float64 stays
        lse = torch.empty(flat.blocks, layout.block, dtype=lse_dtype, device=q.device) if with_lse else None
        for start, stop, p, _ in _iter_chunk_probs(flat, masks, qg, kf, scale, probs, lse):
            torch.bmm(p, flat.windows(vf, start, stop), out=out[start:stop])
        ctx.flat, ctx.scale = flat, scale
        if needs_backward:
            ctx.save_for_backward(qg, kf, vf, out, probs)
        if not with_lse:
            return flat.unflatten_queries(out)
        return flat.unflatten_queries(out), flat.unflatten_queries(lse[..., None])[..., 0]  # (B,H,N,Dv), (B,H,N)

    @staticmethod
    def backward(ctx, grad_out, grad_lse=None):
        qg, kf, vf, out, probs = ctx.saved_tensors
        flat, scale = ctx.flat, ctx.scale
        layout = flat.layout
        go = flat.queries(grad_out)  # (G, b, Dv)
        # d lse / d score = probability: it enters the softmax backward as an offset of the row term
        glse = None if grad_lse is None else flat.queries(grad_lse[..., None].to(go.dtype))  # (G, b, 1)
        dq = torch.empty_like(qg)  # (G, b, D), gradient w.r.t. q * scale until the final rescale
        dkf, dvf = torch.zeros_like(kf), torch.zeros_like(vf)  # (rows, D)
        dk_blocks = dkf.view(-1, layout.block, kf.shape[-1])  # (G+slots-1, b, D)
        dv_blocks = dvf.view(-1, layout.block, vf.shape[-1])  # (G+slots-1, b, Dv)
        step = _chunk_blocks(layout, flat.blocks)
        scratch = qg.new_empty(step, layout.block, layout.window)
        for start in range(0, flat.blocks, step):
            stop = min(start + step, flat.blocks)
            p, g = probs[start:stop], go[start:stop]  # (c, b, W), (c, b, Dv)
            dvw = torch.bmm(p.transpose(1, 2), g)  # (c, W, Dv)
            dp = torch.bmm(g, flat.windows(vf, start, stop).transpose(1, 2), out=scratch[: stop - start])  # (c, b, W)
            row = (g * out[start:stop]).sum(-1, keepdim=True)  # (c, b, 1) = sum_j p_j dp_j
            if glse is not None:
                row = row - glse[start:stop]
            ds = dp.sub_(row).mul_(p)  # softmax backward, in place: d loss / d score
            torch.bmm(ds, flat.windows(kf, start, stop), out=dq[start:stop])
            dkw = torch.bmm(ds.transpose(1, 2), qg[start:stop]).mul_(scale)  # (c, W, D)
            # Window rows [s*b, (s+1)*b) of global block g are rows of buffer block g+s: fold the windows back
            # onto the blocks (the last slot is partial when W is not a multiple of b).
            for s in range(layout.slots):
                rows = min(layout.block, layout.window - s * layout.block)
                dk_blocks[start + s : stop + s, :rows] += dkw[:, s * layout.block : s * layout.block + rows]
                dv_blocks[start + s : stop + s, :rows] += dvw[:, s * layout.block : s * layout.block + rows]
        dq = flat.unflatten_queries(dq.mul_(scale))  # (B, H, N, D)
        return dq, flat.unflatten_keys(dkf), flat.unflatten_keys(dvf), None, None, None, None, None, None


def _banded_probs(q, k, layout: BlockLayout, key_valid, segments, scale: float, self_bias: float) -> torch.Tensor:
    """Detached blocked probabilities (B, H, nb, b, W), for analysis only."""
    batch, heads = q.shape[:2]
    flat = _FlatLayout(layout, batch, heads)
    qg, kf = flat.queries(q.detach()), flat.keys(k.detach())
    masks = flat.masks(key_valid, segments, self_bias, q.dtype)
    probs = q.new_empty(flat.blocks, layout.block, layout.window)  # (G, b, W)
    _chunk_probs(flat, masks, qg, kf, scale, 0, flat.blocks, torch.empty_like(probs), probs)
    return probs.view(batch, heads, layout.num_blocks, layout.block, layout.window)  # (B, H, nb, b, W)


def banded_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_left: int,
    window_right: int,
    key_valid: torch.Tensor,
    *,
    segments: torch.Tensor | None = None,
    scale: float,
    self_bias: float = 0.0,
    block_size: int | None = None,
    return_weights: bool = False,
    return_lse: bool = False,
):
    """The shared kernel behind local and routing attention (inputs already validated), on the backend of
    :mod:`.backend` (FlexAttention off the CPU; the chunked kernel here, or the fused C kernel, on it; weights
    always come from the chunked kernel).

    Beyond :func:`local_attention` it takes a per-head key validity ``key_valid`` (B, H, N) bool, optional
    ``segments`` (B, H, N) int (query i only sees keys j with ``segments[j] == segments[i]``), and a
    ``self_bias`` added to each query's score for its own key.

    Returns ``out`` (B, H, N, Dv); with ``return_weights``, ``(out, weights)`` (detached banded weights, as
    :func:`local_attention` gives them); with ``return_lse``, ``(out, lse)``: each query's differentiable
    log-sum-exp of scores (B, H, N), float32 for half and float32 inputs, float64 for float64 (the masking value
    for a query that sees no key), for merging the band with other keys exactly. Asking for both is an error.
    """
    if return_lse and return_weights:
        raise ValueError("banded_attention returns the weights or the log-sum-exps, not both")
    batch, heads, length, _ = q.shape
    if torch.compiler.is_exporting() and segments is None and not return_weights:
        from .band_export import gathered_band_attention  # a traceable form of the same band (ONNX export)

        return gathered_band_attention(
            q, k, v, window_left, window_right, key_valid, scale, self_bias, return_lse=return_lse
        )
    if length == 0:
        out = q.new_zeros(batch, heads, 0, v.shape[-1])
        if return_lse:
            return out, q.new_zeros(batch, heads, 0, dtype=torch.promote_types(q.dtype, torch.float32))
        return (out, q.new_zeros(batch, heads, 0, window_left + window_right + 1)) if return_weights else out
    if not return_weights and block_size is None and attention_backend(q.device) == "flex":
        return flex.flex_band_attention(
            q,
            k,
            v,
            window_left,
            window_right,
            key_valid,
            segments=segments,
            scale=scale,
            self_bias=self_bias,
            return_lse=return_lse,
        )
    if (
        segments is None
        and not return_weights
        and block_size is None
        and not torch.compiler.is_compiling()
        and native_band.usable(q, window_left, window_right)
    ):
        return native_band.native_band_attention(
            q, k, v, window_left, window_right, key_valid, scale=scale, self_bias=self_bias, return_lse=return_lse
        )
    layout = make_layout(length, window_left, window_right, block_size)
    dtype = q.dtype
    if dtype in (torch.float16, torch.bfloat16):  # scores, softmax and sums in float32, the output in q's type
        q, k, v = q.float(), k.float(), v.float()
    if return_lse:
        out, lse = _BandedAttention.apply(q, k, v, layout, key_valid, segments, scale, self_bias, True)
        return out.to(dtype), lse
    out = _BandedAttention.apply(q, k, v, layout, key_valid, segments, scale, self_bias, False).to(dtype)
    if not return_weights:
        return out
    probs = _banded_probs(q, k, layout, key_valid, segments, scale, self_bias)
    return out, banded_weights(probs, layout, window_left, window_right)


def banded_weights(probs: torch.Tensor, layout: BlockLayout, window_left: int, window_right: int) -> torch.Tensor:
    """Blocked probabilities (B, H, nb, b, W) -> banded weights (B, H, N, L+R+1).

    Entry ``[..., i, o]`` is the weight of key ``j = i - window_left + o``; keys outside the sequence
    (or beyond the clipped window) have weight 0.
    """
    batch, heads = probs.shape[:2]
    width = window_left + window_right + 1
    offsets = torch.arange(width, device=probs.device) - window_left  # j - i for each band column
    r = torch.arange(layout.block, device=probs.device)[:, None]
    col = r + layout.window_left + offsets[None, :]  # (b, width) window column of key j
    inside = (offsets >= -layout.window_left) & (offsets <= layout.window_right)  # within clipped band
    col = col.clamp(0, layout.window - 1)
    index = col.expand(batch, heads, layout.num_blocks, -1, -1)  # (B, H, nb, b, width)
    band = probs.gather(-1, index) * inside.to(probs.dtype)
    band = band.view(batch, heads, layout.num_blocks * layout.block, width)  # (B, H, nb*b, width)
    return band[:, :, : layout.length]


def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_left: int | Sequence[int],
    window_right: int | Sequence[int],
    key_padding_mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    block_size: int | None = None,
    return_weights: bool = False,
):
    """Sliding-window attention: query i attends key j iff ``i - window_left <= j <= i + window_right``.

    Args:
        q, k, v: (B, H, N, D) (v may have its own last dim).
        window_left, window_right: non-negative window extents, one for all heads or one per head;
            ``window_right=0`` is causal. Heads that share a window run together with a blocking chosen for
            that window, so a narrow head costs about its window's share of a wide one.
        key_padding_mask: optional (B, N) bool, True marks padding keys.
        scale: score scale, default ``D ** -0.5``.
        block_size: query block size (tuning knob; the result does not depend on it).
        return_weights: also return detached banded weights (B, H, N, max L + max R + 1); with per-head
            windows, column o of every head is key ``i - max(window_left) + o``.

    Returns:
        out (B, H, N, Dv), or ``(out, weights)`` when ``return_weights``.
    """
    check_qkv(q, k, v)
    batch, heads, length, dim = q.shape
    lefts = check_head_windows("window_left", window_left, heads)
    rights = check_head_windows("window_right", window_right, heads)
    if block_size is not None:
        check_positive("block_size", block_size)
    check_padding_mask(key_padding_mask, batch, length, q.device)
    scale = dim**-0.5 if scale is None else float(scale)
    groups: dict[tuple[int, int], list[int]] = {}
    for head, pair in enumerate(zip(lefts, rights)):
        groups.setdefault(pair, []).append(head)
    if len(groups) == 1:
        return _local_group(q, k, v, lefts[0], rights[0], key_padding_mask, scale, block_size, return_weights)
    # Heads are gathered and put back by slicing: an index tensor would be a host-to-device copy per call.
    per_head: list = [None] * heads
    per_head_weights: list = [None] * heads
    for (left, right), members in groups.items():

        def pick(x, members=members):
            return torch.cat([x[:, h : h + 1] for h in members], dim=1)  # (B, h, N, D) this window's heads

        result = _local_group(
            pick(q), pick(k), pick(v), left, right, key_padding_mask, scale, block_size, return_weights
        )
        out, band = result if return_weights else (result, None)
        for slot, head in enumerate(members):
            per_head[head] = out[:, slot : slot + 1]
            if return_weights:  # place the group's band so that column o is key i - max(L) + o for every head
                per_head_weights[head] = F.pad(band[:, slot : slot + 1], (max(lefts) - left, max(rights) - right))
    out = torch.cat(per_head, dim=1)  # (B, H, N, Dv)
    if not return_weights:
        return out
    return out, torch.cat(per_head_weights, dim=1)  # (B, H, N, max L + max R + 1)


def _local_group(q, k, v, left: int, right: int, key_padding_mask, scale: float, block_size, return_weights):
    """Heads of one window through the banded kernel."""
    batch, heads, length, _ = q.shape
    key_valid = key_validity(key_padding_mask, batch, length, q.device, heads)  # (B, H, N) view: one mask on flex
    return banded_attention(
        q, k, v, left, right, key_valid, scale=scale, block_size=block_size, return_weights=return_weights
    )
