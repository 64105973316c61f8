"""The head-kind protocol: what every kind of attention head provides to a layer.

A layer's heads are split into groups, one per kind (local, routing, ...). Each kind is described twice, in
one module under :mod:`seqattn.nn.heads`:

- a **section** (:class:`HeadSection`, a dataclass of values, the ``attention.<section>`` block of a YAML
  config): how many heads, the kind's own settings, and what follows from them without any weights: how far
  a query can look (:meth:`HeadSection.reach`, for chunked inference and streaming halos), what a query costs
  (:meth:`HeadSection.keys_per_query`, for ``convert localize``) and whether the kind exports to ONNX;
- a **module** (:class:`HeadKind`), built by :meth:`HeadSection.build`: the forward pass on the group's slice
  of q, k, v, always returning a :class:`HeadOutput`, and for kinds that support cached generation the
  prompt pass (:meth:`HeadKind.prefill`) and the one-token step (:meth:`HeadKind.step`).

:class:`~seqattn.nn.multihead.MultiHeadAttention` only iterates over its groups; it knows no kind by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..weights import AttentionWeights


@dataclass
class HeadOutput:
    """What a head group returns: its output, its auxiliary loss (routing commitment) and, when asked, its
    weights in the sparse layout of :class:`~seqattn.nn.weights.AttentionWeights`."""

    out: torch.Tensor  # (B, h, N, Dv)
    aux_loss: torch.Tensor | None = None  # scalar
    weights: AttentionWeights | None = None


class CacheUnsupported(ValueError):
    """Cached (token-by-token) generation asked of a head kind that has no cache."""


@dataclass
class HeadSection:
    """One kind's block of an attention config: its head count and settings (values only).

    Subclasses set ``kind`` (the name in weights, caches and messages) and ``exportable``, and override
    :meth:`build`, :meth:`keys_per_query` and, when the kind has a bounded reach or settings to check,
    :meth:`reach` and :meth:`validate`."""

    heads: int = 0
    kind: ClassVar[str] = ""
    exportable: ClassVar[bool] = True  # traceable by torch.export (ONNX): no data-dependent shapes

    def validate(self, causal: bool) -> None:
        """Raise ValueError naming the setting that is out of range."""
        if self.heads < 0:
            raise ValueError(f"heads must be >= 0, got {self.heads}")

    def reach(self, causal: bool) -> tuple[int, int] | None:
        """(frames left, frames right) beyond which no query of these heads looks, or None when a query can see
        the whole sequence or the kind works on absolute positions."""
        return None

    def keys_per_query(self, length: int) -> float:
        """Keys a query of these heads is multiplied against, on average, in a sequence of ``length``."""
        raise NotImplementedError

    def build(self, head_dim: int, causal: bool) -> HeadKind:
        """The module that runs these heads."""
        raise NotImplementedError


class HeadKind:
    """Mixin of the modules that run one head group (each also an ``nn.Module``).

    ``forward(q, k, v, key_padding_mask=None, return_weights=False) -> HeadOutput`` takes the group's slice
    (B, h, N, D). Kinds with a cache override :meth:`prefill` and :meth:`step`; the buffers they return are
    held by :class:`~seqattn.nn.incremental.LayerCache`, keyed by ``kind``.
    """

    kind: ClassVar[str] = ""
    # Attribute of the layer that holds this module: the prefix of its parameters' names in saved weights.
    module_name: ClassVar[str] = ""

    @property
    def cacheable(self) -> bool:
        return type(self).prefill is not HeadKind.prefill

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """The cache buffer of a prompt's (rotated) q, k, v (B, h, N, D), as the forward pass computed them."""
        raise CacheUnsupported(f"cached generation does not support {self.kind} heads")

    def step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, buffer, position: int) -> torch.Tensor:
        """Output (B, h, Dv) of one new token, q, k, v (B, h, D) at ``position``, over ``buffer``; the buffer
        then holds the token too."""
        raise CacheUnsupported(f"cached generation does not support {self.kind} heads")
