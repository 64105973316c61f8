"""Multi-head attention that owns the projections and splits its heads among head kinds.

A layer's heads are laid out in the order of :class:`AttentionConfig`'s sections: ``local``, ``routing``,
``shifted_window``, ``pooled``, ``dilated``, ``global_tokens``, ``block_routed``, then full heads for whatever
remains. Each group runs its kind's module (:mod:`seqattn.nn.heads`) on its slice of q, k, v; the outputs are
concatenated back in head order before the output projection. So "6 local + 2 routing" heads, HiLo (local +
pooled heads) or an all-full layer are all the same module with other counts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from .heads import (
    BlockRoutedHeads,
    DilatedHeads,
    FullHeads,
    GlobalTokenHeads,
    HeadKind,
    HeadSection,
    LocalHeads,
    PooledHeads,
    RoutingHeads,
    ShiftedWindowHeads,
)
from .heads.base import CacheUnsupported
from .incremental import LayerCache
from .rotary import Rotary
from .weights import AttentionWeights

# Keys of the flat attention config (before each head kind had its own section) -> where they live now.
FLAT_KEYS = {
    "local_heads": "local.heads", "window_left": "local.window_left", "window_right": "local.window_right",
    "local_windows": "local.windows",
    "routing_heads": "routing.heads", "num_clusters": "routing.clusters", "routing_window": "routing.window",
    "routing_shared_qk": "routing.shared_qk", "kmeans_decay": "routing.kmeans_decay",
    "commitment_weight": "routing.commitment_weight",
    "window_heads": "shifted_window.heads", "block_window": "shifted_window.window",
    "block_shift": "shifted_window.shift",
    "pooled_heads": "pooled.heads", "pool_size": "pooled.pool_size",
    "dilated_heads": "dilated.heads", "dilation": "dilated.dilation", "dilated_window": "dilated.window",
    "global_heads": "global_tokens.heads", "global_tokens": "global_tokens.tokens",
    "global_pooling": "global_tokens.pooling", "global_window": "global_tokens.window",
    "global_block": "global_tokens.block",
    "block_routed_heads": "block_routed.heads", "routed_block": "block_routed.block",
    "routed_top_k": "block_routed.top_k",
}


def _flat_keys(values: dict) -> list[str]:
    """The flat keys in ``values`` (``global_tokens`` is flat only as a count: it is a section now)."""
    return [
        key for key in values if key in FLAT_KEYS and not (key == "global_tokens" and isinstance(values[key], dict))
    ]


def nest_flat_keys(values: dict) -> dict:
    """Attention values with every flat key moved into its section (values already nested are kept)."""
    flat = _flat_keys(values)
    nested = {key: value for key, value in values.items() if key not in flat}
    for key in flat:
        section, name = FLAT_KEYS[key].split(".")
        nested.setdefault(section, {})[name] = values[key]
    return nested


@dataclass
class AttentionConfig:
    """How one layer's heads are split among head kinds: one section per kind (values only), each with its
    head count; the heads no section takes are full heads."""

    num_heads: int = 8
    causal: bool = False
    local: LocalHeads = field(default_factory=LocalHeads)
    routing: RoutingHeads = field(default_factory=RoutingHeads)
    shifted_window: ShiftedWindowHeads = field(default_factory=ShiftedWindowHeads)
    pooled: PooledHeads = field(default_factory=PooledHeads)
    dilated: DilatedHeads = field(default_factory=DilatedHeads)
    global_tokens: GlobalTokenHeads = field(default_factory=GlobalTokenHeads)
    block_routed: BlockRoutedHeads = field(default_factory=BlockRoutedHeads)
    rotary: bool = False
    rotary_base: float = 10000.0

    def replace(self, **changes) -> AttentionConfig:
        """A copy with some fields changed; a section given as a mapping changes only the settings it names
        (``config.replace(num_heads=4, local={"heads": 4})`` keeps the local window)."""
        for name, value in list(changes.items()):
            current = getattr(self, name, None)
            if isinstance(current, HeadSection) and isinstance(value, dict):
                changes[name] = dataclasses.replace(current, **value)
        return dataclasses.replace(self, **changes)

    def sections(self) -> list[HeadSection]:
        """Every head kind's section in head order, the full heads last (empty ones included)."""
        named = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return [s for s in named if isinstance(s, HeadSection)] + [FullHeads(heads=self.full_heads)]

    @property
    def full_heads(self) -> int:
        return self.num_heads - sum(
            getattr(self, f.name).heads
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), HeadSection)
        )

    @property
    def reach(self) -> tuple[int, int] | None:
        """(frames left, frames right) beyond which no query looks, or None when some head sees the whole
        sequence (routing, pooled, full) or works on absolute window positions (shifted windows). A layer with
        a bounded reach can be run on overlapping time slices with the same result."""
        reaches = [section.reach(self.causal) for section in self.sections() if section.heads]
        if not reaches or any(r is None for r in reaches):
            return None
        return max(r[0] for r in reaches), max(r[1] for r in reaches)

    @property
    def exportable(self) -> bool:
        """Whether every head of the layer traces to ONNX."""
        return all(section.exportable for section in self.sections() if section.heads)

    def validate(self) -> None:
        """Raise ValueError naming the section and setting that is out of range (``local: window_right ...``)."""
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if isinstance(section, HeadSection):
                try:
                    section.validate(self.causal)
                except ValueError as error:
                    raise ValueError(f"{f.name}: {error}") from None
        if self.full_heads < 0:
            counts = {s.kind: s.heads for s in self.sections()[:-1] if s.heads}
            raise ValueError(f"head counts {counts} add up to more than num_heads={self.num_heads}")

    @classmethod
    def from_dict(cls, values: dict, where: str = "attention") -> AttentionConfig:
        """From a config's values (YAML); a key of the old flat layout is refused with the key it moved to."""
        from seqattn.utils.values import check_known_keys, from_values

        flat = _flat_keys(values)
        if flat:
            raise ValueError(
                "attention settings are grouped by head kind now: "
                + ", ".join(f"{where}.{key} -> {where}.{FLAT_KEYS[key]}" for key in flat)
            )
        check_known_keys(cls, values, where)
        return from_values(cls, values, where)

    @classmethod
    def from_saved(cls, values: dict, where: str = "attention") -> AttentionConfig:
        """From a saved model's config.json, also one written with the flat layout (translated key by key)."""
        return cls.from_dict(nest_flat_keys(values), where)


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
        self.groups: list[tuple[HeadKind, slice]] = []  # each kind's module and its heads, in head order
        start = 0
        for section in config.sections():
            if section.heads:
                kind = section.build(self.head_dim, config.causal)
                self.add_module(kind.module_name, kind)  # its parameters are saved under this name
                self.groups.append((kind, slice(start, start + section.heads)))
            start += section.heads

    def head_groups(self) -> list[tuple[str, int, int]]:
        """(kind, first head, head count) for every non-empty group, in head order."""
        return [(kind.kind, heads.start, heads.stop - heads.start) for kind, heads in self.groups]

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

    def _prefill(self, q, k, v, cache: LayerCache) -> None:
        """Fill an empty cache from a prompt's (rotated) q, k, v (B, H, N, D): one buffer per head group."""
        if not self.config.causal:
            raise CacheUnsupported("cached generation needs a causal attention layer")
        if cache.position != 0 or cache.buffers:
            raise ValueError("prefill needs an empty cache (a prompt is processed once, at the start)")
        for kind, _ in self.groups:
            if not kind.cacheable:
                kind.prefill(q, k, v)  # raises, naming the kind
        for kind, heads in self.groups:
            cache.buffers[kind.kind] = kind.prefill(q[:, heads], k[:, heads], v[:, heads])
        cache.position = q.shape[2]

    def step(self, x: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        """Incremental generation: the output (B, 1, E) for one new token x (B, 1, E) at ``cache.position``,
        attending to what ``cache`` holds (filled by a ``forward(..., cache=cache)`` prompt pass)."""
        batch = x.shape[0]
        q, k, v = self.project(x, cache.position)  # (B, H, 1, D) each
        outputs = [
            kind.step(q[:, heads, 0], k[:, heads, 0], v[:, heads, 0], cache.buffers[kind.kind], cache.position)
            for kind, heads in self.groups
        ]  # (B, h, D) each
        cache.position += 1
        out = torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]  # (B, H, D)
        return self.out_proj(out.reshape(batch, 1, self.embed_dim))  # (B, 1, E)

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
            self._prefill(q, k, v, cache)
        outputs, weights = [], []
        aux = x.new_zeros(())
        for kind, heads in self.groups:
            result = kind(q[:, heads], k[:, heads], v[:, heads], key_padding_mask, return_weights=return_weights)
            outputs.append(result.out)
            if result.aux_loss is not None:
                aux = aux + result.aux_loss
            if result.weights is not None:
                result.weights.heads = tuple(range(heads.start, heads.stop))
                weights.append(result.weights)
        out = torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]  # (B, H, N, D)
        out = out.transpose(1, 2).reshape(batch, length, self.embed_dim)  # (B, N, E)
        return AttentionOutput(self.out_proj(out), aux, weights)
