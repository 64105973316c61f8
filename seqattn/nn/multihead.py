"""Multi-head attention that owns the projections and splits its heads among kernels.

Heads are laid out in a fixed order: ``local``, ``routing``, ``window`` (shifted windows), ``pooled``
(HiLo low-frequency), ``dilated``, ``global`` (a window plus pooled summary tokens), ``block_routed`` (MoBA: own
block plus gated key blocks), then ``full`` for whatever remains. Each group runs its own kernel on its slice of
q, k, v; the outputs are concatenated back in head order before the output projection. So "6 local + 2
routing" heads, HiLo (local + pooled heads) or an all-full layer are all the same module with other counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .block_routing import block_routed_attention
from .dilated import dilated_attention
from .full import full_attention
from .global_tokens import POOLINGS, GlobalTokens
from .incremental import LayerCache, attention_step, check_cacheable, prefill
from .local import local_attention
from .rotary import Rotary
from .routing import RoutingAttention
from .variants import pooled_attention, shifted_window_attention
from .weights import AttentionWeights


@dataclass
class AttentionConfig:
    """How one layer's heads are split among kernels, and each kernel's settings (values only)."""

    num_heads: int = 8
    local_heads: int = 0
    routing_heads: int = 0
    window_heads: int = 0  # Swin-style non-overlapping windows
    pooled_heads: int = 0  # HiLo low-frequency heads (attend average-pooled keys/values)
    dilated_heads: int = 0  # dilated windows: keys at stride `dilation` within +-dilated_window strides
    global_heads: int = 0  # a window plus global summary tokens (GC ViT, BigBird)
    block_routed_heads: int = 0  # MoBA: own block plus the top-k blocks by mean key
    causal: bool = False
    # local heads: query i sees keys i - window_left .. i + window_right (window_right must be 0 if causal)
    window_left: int = 64
    window_right: int = 64
    # per-head windows of the local heads, [[left, right], ...] one pair per local head (None: window_left and
    # window_right for all of them). Heads of one window run together, so narrow heads cost less.
    local_windows: list[list[int]] | None = None
    # routing heads
    num_clusters: int = 8
    routing_window: int = 64
    routing_shared_qk: bool = False
    kmeans_decay: float = 0.999
    commitment_weight: float = 1e-4
    # shifted-window heads: window size and this layer's shift (alternate 0 and window // 2 across layers)
    block_window: int = 64
    block_shift: int = 0
    # pooled heads: tokens per pool
    pool_size: int = 4
    # dilated heads: query i sees keys i + m * dilation, -dilated_window <= m <= dilated_window (m <= 0 if causal)
    dilation: int = 4
    dilated_window: int = 16
    # global heads: +-global_window plus global_tokens summaries, pooled by learned queries ("learned") or
    # as means of equal segments ("mean"); causal layers pool complete past blocks of global_block positions
    global_tokens: int = 4
    global_pooling: str = "learned"
    global_window: int = 64
    global_block: int = 64
    # block-routed heads: positions per block, and blocks chosen by the gate besides the query's own
    routed_block: int = 64
    routed_top_k: int = 2
    rotary: bool = False
    rotary_base: float = 10000.0

    @property
    def full_heads(self) -> int:
        return (self.num_heads - self.local_heads - self.routing_heads - self.window_heads - self.pooled_heads
                - self.dilated_heads - self.global_heads - self.block_routed_heads)

    def local_head_windows(self) -> tuple[list[int], list[int]]:
        """(left extents, right extents) of the local heads, one entry per local head."""
        if self.local_windows is None:
            return [self.window_left] * self.local_heads, [self.window_right] * self.local_heads
        return [int(pair[0]) for pair in self.local_windows], [int(pair[1]) for pair in self.local_windows]

    @property
    def reach(self) -> tuple[int, int] | None:
        """(frames left, frames right) beyond which no query looks, or None when some head sees the whole
        sequence (routing, pooled, full) or works on absolute window positions (shifted windows). A layer with
        a bounded reach can be run on overlapping time slices with the same result."""
        if self.local_heads + self.dilated_heads == self.num_heads:
            lefts, rights = self.local_head_windows()
            reach = self.dilated_window * self.dilation if self.dilated_heads else 0
            right = 0 if self.causal else reach
            return max([reach, *lefts]), max([right, *rights])
        return None

    def validate(self) -> None:
        counts = dict(
            local_heads=self.local_heads,
            routing_heads=self.routing_heads,
            window_heads=self.window_heads,
            pooled_heads=self.pooled_heads,
            dilated_heads=self.dilated_heads,
            global_heads=self.global_heads,
            block_routed_heads=self.block_routed_heads,
        )
        for name, value in counts.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.full_heads < 0:
            raise ValueError(f"head counts {counts} add up to more than num_heads={self.num_heads}")
        if self.causal and self.window_right != 0 and self.local_heads:
            raise ValueError(f"causal attention needs window_right=0, got {self.window_right}")
        if self.window_left < 0 or self.window_right < 0:
            raise ValueError(f"window_left/window_right must be >= 0, got {self.window_left}/{self.window_right}")
        if self.dilated_heads and (self.dilation < 1 or self.dilated_window < 0):
            raise ValueError(f"dilated heads need dilation >= 1 and dilated_window >= 0, got {self.dilation} and "
                             f"{self.dilated_window}")
        if self.global_heads:
            if self.global_pooling not in POOLINGS:
                raise ValueError(f"global_pooling must be one of {POOLINGS}, got {self.global_pooling!r}")
            if self.global_tokens < 1 or self.global_window < 0 or self.global_block < 1:
                raise ValueError(f"global heads need global_tokens >= 1, global_window >= 0 and global_block >= 1, "
                                 f"got {self.global_tokens}, {self.global_window} and {self.global_block}")
            if self.causal and self.global_pooling == "mean" and self.global_tokens != 1:
                raise ValueError("causal global heads with global_pooling: mean have one summary (the mean of the "
                                 f"past blocks): set global_tokens: 1, got {self.global_tokens}")
        if self.block_routed_heads and (self.routed_block < 1 or self.routed_top_k < 0):
            raise ValueError(f"block-routed heads need routed_block >= 1 and routed_top_k >= 0, got "
                             f"{self.routed_block} and {self.routed_top_k}")
        if self.local_windows is not None:
            if len(self.local_windows) != self.local_heads:
                raise ValueError(f"local_windows gives {len(self.local_windows)} windows for {self.local_heads} "
                                 "local heads")
            for index, pair in enumerate(self.local_windows):
                if (len(pair) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in pair)):
                    raise ValueError(f"local_windows[{index}] must be [left, right] with non-negative ints, got "
                                     f"{pair!r}")
                if self.causal and pair[1] != 0:
                    raise ValueError(f"causal attention needs right extents of 0, local_windows[{index}] is {pair}")


@dataclass
class AttentionOutput:
    out: torch.Tensor  # (B, N, E)
    aux_loss: torch.Tensor  # scalar, sum of the kernels' auxiliary losses (routing commitment)
    weights: list[AttentionWeights] = field(default_factory=list)  # one entry per head group, if asked


class MultiHeadAttention(nn.Module):
    """Projections + head groups. ``forward(x (B, N, E), key_padding_mask (B, N) bool) -> AttentionOutput``."""

    def __init__(self, embed_dim: int, config: AttentionConfig, bias: bool = True):
        super().__init__()
        config.validate()
        if embed_dim % config.num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {config.num_heads}")
        self.config = config
        self.embed_dim, self.num_heads = embed_dim, config.num_heads
        self.head_dim = embed_dim // config.num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.rotary = Rotary(self.head_dim, config.rotary_base) if config.rotary else None
        self.routing = None
        if config.routing_heads:
            self.routing = RoutingAttention(
                config.routing_heads,
                self.head_dim,
                config.num_clusters,
                config.routing_window,
                causal=config.causal,
                shared_qk=config.routing_shared_qk,
                decay=config.kmeans_decay,
                commitment=config.commitment_weight,
            )
        self.global_attention = None
        if config.global_heads:
            self.global_attention = GlobalTokens(
                config.global_heads, self.head_dim, tokens=config.global_tokens, pooling=config.global_pooling,
                window_left=config.global_window, window_right=config.global_window, causal=config.causal,
                block=config.global_block,
            )

    def head_groups(self) -> list[tuple[str, int, int]]:
        """(kind, first head, head count) for every non-empty group, in head order."""
        c = self.config
        groups, start = [], 0
        for kind, count in (
            ("local", c.local_heads),
            ("routing", c.routing_heads),
            ("window", c.window_heads),
            ("pooled", c.pooled_heads),
            ("dilated", c.dilated_heads),
            ("global", c.global_heads),
            ("block_routed", c.block_routed_heads),
            ("full", c.full_heads),
        ):
            if count:
                groups.append((kind, start, count))
            start += count
        return groups

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, D)

    def project(self, x: torch.Tensor, position_offset: int = 0):
        """Queries, keys and values of x (B, N, E), each (B, H, N, D), rotated when the layer is rotary
        (``position_offset`` is the position of x's first token)."""
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        if self.rotary is not None:
            q, k = self.rotary(q, position_offset), self.rotary(k, position_offset)
        return q, k, v

    def step(self, x: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """Incremental generation: the output (B, 1, E) for one new token x (B, 1, E) at ``cache.position``,
        attending to what ``cache`` holds (filled by a ``forward(..., cache=cache)`` prompt pass)."""
        batch = x.shape[0]
        q, k, v = self.project(x, cache.position)  # (B, H, 1, D) each
        out = attention_step(self.head_groups(), q, k, v, cache, routing=self.routing,
                             global_tokens=self.global_attention,
                             routed=(self.config.routed_block, self.config.routed_top_k))  # (B, H, D)
        return self.out_proj(out.reshape(batch, 1, self.embed_dim))  # (B, 1, E)

    def _run_group(self, kind, q, k, v, key_padding_mask, return_weights):
        """One kernel on its head slice -> (out (B, h, N, D), aux loss or None, weights or None)."""
        c = self.config
        if kind == "routing":
            routed = self.routing(q, k, v, key_padding_mask, return_weights=return_weights)
            return routed.out, routed.aux_loss, routed.weights
        if kind == "global":
            result = self.global_attention(q, k, v, key_padding_mask, return_weights=return_weights)
            return (result[0], None, result[1]) if return_weights else (result, None, None)
        if kind == "local":
            lefts, rights = c.local_head_windows()
            rights = [0] * len(rights) if c.causal else rights
            result = local_attention(q, k, v, lefts, rights, key_padding_mask, return_weights=return_weights)
        elif kind == "window":
            result = shifted_window_attention(
                q, k, v, c.block_window, c.block_shift, key_padding_mask, causal=c.causal,
                return_weights=return_weights,
            )
        elif kind == "dilated":
            right = 0 if c.causal else c.dilated_window
            result = dilated_attention(q, k, v, c.dilated_window, right, c.dilation, key_padding_mask,
                                       return_weights=return_weights)
            if return_weights:
                out, (weights, keys) = result
                return out, None, AttentionWeights("dilated", (), weights, key_index=keys)
            return result, None, None
        elif kind == "block_routed":
            result = block_routed_attention(q, k, v, c.routed_block, c.routed_top_k, causal=c.causal,
                                            key_padding_mask=key_padding_mask, return_weights=return_weights)
            if return_weights:
                return result[0], None, result[1]
            return result, None, None
        elif kind == "pooled":
            result = pooled_attention(
                q, k, v, c.pool_size, key_padding_mask, causal=c.causal, return_weights=return_weights
            )
        else:
            result = full_attention(q, k, v, key_padding_mask, causal=c.causal, return_weights=return_weights)
        if not return_weights:
            return result, None, None
        out, weights = result
        if kind == "local":
            weights = AttentionWeights("local", (), weights, window_left=max(c.local_head_windows()[0]))
        elif kind == "full":
            weights = AttentionWeights("full", (), weights)
        return out, None, weights

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        return_weights: bool = False,
        position_offset: int = 0,
        cache=None,
    ) -> AttentionOutput:
        """``cache``: an empty :class:`~seqattn.nn.incremental.LayerCache` to fill from this (prompt) pass, so
        that generation can go on token by token with :meth:`step`."""
        batch, length, _ = x.shape
        q, k, v = self.project(x, position_offset)  # (B, H, N, D) each
        if cache is not None:
            if key_padding_mask is not None:
                raise ValueError("a cached (generation) pass takes unpadded prompts")
            check_cacheable(self.head_groups(), self.config.causal)
            prefill(self.head_groups(), q, k, v, cache, window_lefts=self.config.local_head_windows()[0],
                    routing=self.routing, dilation=(self.config.dilation, self.config.dilated_window),
                    global_tokens=self.global_attention, routed_block=self.config.routed_block)
        outputs, weights = [], []
        aux = x.new_zeros(())
        for kind, start, count in self.head_groups():
            heads = slice(start, start + count)
            out, group_aux, group_weights = self._run_group(
                kind, q[:, heads], k[:, heads], v[:, heads], key_padding_mask, return_weights
            )
            outputs.append(out)
            if group_aux is not None:
                aux = aux + group_aux
            if group_weights is not None:
                group_weights.heads = tuple(range(start, start + count))
                weights.append(group_weights)
        out = torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]  # (B, H, N, D)
        out = out.transpose(1, 2).reshape(batch, length, self.embed_dim)  # (B, N, E)
        return AttentionOutput(self.out_proj(out), aux, weights)
