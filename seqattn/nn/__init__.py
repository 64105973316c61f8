"""seqattn.nn: the 1D attention library shared by every seqattn model.

Kernels take q, k, v of shape (B, H, N, D) and own no parameters; :class:`MultiHeadAttention` owns the
projections and splits its heads among kernels.
"""
from .dilated import dilated_attention
from .full import full_attention
from .incremental import LayerCache, attention_step
from .local import local_attention
from .multihead import AttentionConfig, AttentionOutput, MultiHeadAttention
from .rotary import Rotary
from .routing import KMeans, RoutingAttention, RoutingOutput, routing_attention
from .variants import pooled_attention, shifted_window_attention
from .weights import AttentionWeights

__all__ = [
    "AttentionConfig",
    "AttentionOutput",
    "AttentionWeights",
    "KMeans",
    "LayerCache",
    "MultiHeadAttention",
    "Rotary",
    "RoutingAttention",
    "RoutingOutput",
    "attention_step",
    "dilated_attention",
    "full_attention",
    "local_attention",
    "pooled_attention",
    "routing_attention",
    "shifted_window_attention",
]
