"""Routing heads (Routing Transformer): queries and keys are filed by online k-means and each query attends
the keys of its own cluster, ``window`` at a time (balanced clusters; causal: the cluster's latest keys).
The kernel and the k-means state are :class:`seqattn.nn.routing.RoutingAttention`; the cache keeps, per
cluster, a ring buffer of the last ``window`` keys filed there: exactly what the causal kernel lets a query
see."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..incremental import ClusterBuffer, attend_one
from ..routing import SHARED_QK_SELF_BIAS, RoutingAttention, normalize, similarities, unit
from .base import HeadKind, HeadOutput, HeadSection


@dataclass
class RoutingHeads(HeadSection):
    kind: ClassVar[str] = "routing"
    exportable: ClassVar[bool] = False  # the k-means assignment sorts tokens into data-dependent shapes
    clusters: int = 8
    window: int = 64  # keys per routed window (balanced cluster chunk)
    shared_qk: bool = False
    kmeans_decay: float = 0.999
    commitment_weight: float = 1e-4

    def validate(self, causal: bool) -> None:
        super().validate(causal)
        if self.heads and (self.clusters < 1 or self.window < 1):
            raise ValueError(f"routing heads need clusters >= 1 and window >= 1, got {self.clusters} and "
                             f"{self.window}")

    def keys_per_query(self, length: int) -> float:
        return min(self.window, length)

    def build(self, head_dim: int, causal: bool) -> RoutingKind:
        return RoutingKind(self.heads, head_dim, self.clusters, self.window, causal=causal,
                           shared_qk=self.shared_qk, decay=self.kmeans_decay, commitment=self.commitment_weight)


class RoutingKind(RoutingAttention, HeadKind):
    kind: ClassVar[str] = "routing"
    module_name: ClassVar[str] = "routing"  # parameters: routing.kmeans.*

    def forward(self, q, k, v, key_padding_mask=None, return_weights: bool = False) -> HeadOutput:
        routed = super().forward(q, k, v, key_padding_mask, return_weights=return_weights)
        return HeadOutput(routed.out, routed.aux_loss, routed.weights)

    def _route(self, q, k):
        """Normalised query and key, and the cluster of each query (the causal kernel files tokens by their
        query), against the frozen centroids."""
        qn = normalize(q)
        kn = qn if self.shared_qk else normalize(k)
        return qn, kn, similarities(unit(qn), self.kmeans.means).argmax(-1)

    def prefill(self, q, k, v) -> ClusterBuffer:
        batch, heads, _, dim = q.shape
        qn, kn, ids = self._route(q, k)  # ids (B, h, N)
        buffer = ClusterBuffer.empty(batch, heads, self.kmeans.num_clusters, self.window, dim, v.shape[-1], q)
        buffer.fill(ids, kn, v)
        return buffer

    def step(self, q, k, v, buffer: ClusterBuffer, position: int):
        qn, kn, ids = self._route(q[:, :, None], k[:, :, None])  # (B, h, 1, D), ids (B, h, 1)
        qn, kn, ids = qn[:, :, 0], kn[:, :, 0], ids[:, :, 0]
        keys, values, valid = buffer.gather(ids)
        # shared QK: a token's own score is suppressed (a lone token still takes all its weight)
        out = attend_one(qn, keys, values, valid, kn, v, own_bias=SHARED_QK_SELF_BIAS if self.shared_qk else 0.0)
        buffer.push(ids, kn, v)
        return out
