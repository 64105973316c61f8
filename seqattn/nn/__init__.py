"""seqattn.nn: the 1D attention library shared by every seqattn model.

Kernels take q, k, v of shape (B, H, N, D) and own no parameters; :class:`MultiHeadAttention` owns the
projections and splits its heads among head kinds (:mod:`seqattn.nn.heads`), each configured by its own
section of :class:`AttentionConfig`.
"""
from .dilated import dilated_attention
from .full import full_attention
from .heads import (
    BlockRoutedHeads,
    DilatedHeads,
    GlobalTokenHeads,
    HeadKind,
    HeadOutput,
    HeadSection,
    LocalHeads,
    PooledHeads,
    RoutingHeads,
    ShiftedWindowHeads,
)
from .incremental import LayerCache
from .local import local_attention
from .multihead import AttentionConfig, AttentionOutput, MultiHeadAttention
from .pooled import pooled_attention
from .rotary import Rotary
from .routing import KMeans, RoutingAttention, RoutingOutput, routing_attention
from .shifted_window import shifted_window_attention
from .weights import AttentionWeights

__all__ = [
    "AttentionConfig",
    "AttentionOutput",
    "AttentionWeights",
    "BlockRoutedHeads",
    "DilatedHeads",
    "GlobalTokenHeads",
    "HeadKind",
    "HeadOutput",
    "HeadSection",
    "KMeans",
    "LayerCache",
    "LocalHeads",
    "MultiHeadAttention",
    "PooledHeads",
    "Rotary",
    "RoutingAttention",
    "RoutingHeads",
    "RoutingOutput",
    "ShiftedWindowHeads",
    "dilated_attention",
    "full_attention",
    "local_attention",
    "pooled_attention",
    "routing_attention",
    "shifted_window_attention",
]
