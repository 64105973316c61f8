"""Content-routed attention (Routing Transformer, Roy et al. 2021) with online spherical k-means.

Queries and keys are layer-normalised (no affine), so every vector has norm sqrt(D); they are routed to the
nearest of C unit centroids (cosine similarity). Two routings are offered:

* ``causal=True`` (decoders), strictly causal. Each token gets one cluster, that of its query (with shared
  QK, as in the paper's LMs, query and key are the same vector). Tokens are sorted by (cluster, position);
  query i then attends the ``window`` most recent earlier tokens *of its own cluster* plus itself. This is
  local attention on the permuted sequence with a same-cluster mask, so it reuses the banded kernel and
  costs O(N * window). Which keys a query sees depends only on tokens at positions <= its own: unlike
  Google's balanced top-k, no future token can change a past token's neighbourhood.
* ``causal=False`` (encoders), balanced clusters as in the paper: every cluster takes the ``window``
  queries and the ``window`` keys closest to its centroid, attends densely inside that group, and a query
  picked by several clusters averages their outputs (a query picked by none outputs zeros). With
  ``C * window = N`` this costs O(N * window).

Centroids live in :class:`KMeans`: EMA updates of the cluster means (train mode only; statistics
all-reduced under DDP so every rank keeps identical centroids) and a commitment loss returned to the caller.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .checks import check_padding_mask, check_positive, check_qkv
from .local import banded_attention, host_any
from .numerics import key_validity
from .weights import AttentionWeights

# Score added to a query's own key when queries and keys are shared: with shared QK a token's own score is
# always the largest, so it is suppressed unless nothing else is visible (as in Reformer).
SHARED_QK_SELF_BIAS = -5e4


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Layer norm without affine over the head dim: zero mean, unit variance, norm sqrt(D)."""
    return F.layer_norm(x, x.shape[-1:])


def unit(x_normalized: torch.Tensor) -> torch.Tensor:
    """Unit vectors from layer-normalised ones (whose norm is sqrt(D))."""
    return x_normalized * x_normalized.shape[-1] ** -0.5


@dataclass
class RoutingOutput:
    """What routed attention returns: the kernels fill ``out`` (and ``weights`` when asked); the
    :class:`RoutingAttention` module adds its k-means commitment loss."""

    out: torch.Tensor  # (B, H, N, Dv)
    weights: AttentionWeights | None = None
    aux_loss: torch.Tensor | None = None  # scalar commitment loss (already weighted); None from the kernels


def _gather_seq(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, H, N, D) gathered along N by index (B, H, M) -> (B, H, M, D).

    Implemented as one ``index_select`` of rows of the flattened (B*H*N, D) tensor: unlike ``gather`` it
    needs no (B, H, M, D) index, and its backward is a row ``index_add``.
    """
    batch, heads, length, dim = x.shape
    rows = _flat_rows(index, length)
    return x.reshape(-1, dim).index_select(0, rows).view(*index.shape, dim)


def _flat_rows(index: torch.Tensor, length: int) -> torch.Tensor:
    """Positions (B, H, M) -> row numbers in the flattened (B*H*N) sequence axis, as a flat vector."""
    batch, heads = index.shape[:2]
    offsets = torch.arange(batch * heads, device=index.device).view(batch, heads, 1) * length
    return (index + offsets).flatten()


def causal_routed(qn, kn, v, ids, valid, window: int, scale: float, self_bias: float, return_weights: bool,
                  num_clusters: int):
    """Strictly causal routing: same-cluster sliding window over tokens sorted by (cluster, position).

    ``ids`` (B, H, N) is each token's cluster in [0, num_clusters); ``valid`` (B, H, N) bool marks real tokens.
    Padding tokens are filed under an extra cluster so they never sit between real tokens of a cluster.
    """
    batch, heads, length, _ = qn.shape
    ids = torch.where(valid, ids, torch.full_like(ids, num_clusters))
    positions = torch.arange(length, device=ids.device)
    perm = torch.argsort(ids * length + positions, dim=-1)  # (B, H, N): sorted by (cluster, position)
    inverse = torch.empty_like(perm).scatter_(2, perm, positions.expand_as(perm))  # (B, H, N)
    qp, kp, vp = (_gather_seq(x, perm) for x in (qn, kn, v))  # (B, H, N, D) in sorted order
    segments = torch.gather(ids, 2, perm)  # (B, H, N), non-decreasing
    valid_p = torch.gather(valid, 2, perm)
    result = banded_attention(
        qp, kp, vp, window, 0, valid_p, segments=segments, scale=scale, self_bias=self_bias,
        return_weights=return_weights,
    )
    out_p, band = result if return_weights else (result, None)
    out = _gather_seq(out_p, inverse)  # (B, H, N, Dv) back in sequence order
    if band is None:
        return RoutingOutput(out, None)
    slot = torch.arange(length, device=ids.device)[:, None] - window + torch.arange(window + 1, device=ids.device)
    inside = (slot >= 0).expand(batch, heads, -1, -1)  # (B, H, N, w+1)
    key_index = torch.gather(perm, 2, slot.clamp(min=0).flatten()[None, None].expand(batch, heads, -1))
    key_index = key_index.view(batch, heads, length, window + 1)  # (B, H, N, w+1) original key positions
    key_index = torch.where(inside & (band > 0), key_index, torch.full_like(key_index, -1))
    weights = AttentionWeights("routing", (), band, query_index=perm, key_index=key_index)
    return RoutingOutput(out, weights)


def balanced_routed(qn, kn, v, q_sim, k_sim, valid, window: int, scale: float, self_bias: float, return_weights):
    """Balanced (top-k per cluster) bidirectional routing.

    ``q_sim``/``k_sim`` (B, H, N, C) are the similarities of queries/keys to the centroids.
    """
    batch, heads, length, _ = qn.shape
    clusters = q_sim.shape[-1]
    size = min(window, length)
    neg = torch.finfo(q_sim.dtype).min
    q_sim = q_sim.masked_fill(~valid[..., None], neg)  # padding is picked last and then masked
    k_sim = k_sim.masked_fill(~valid[..., None], neg)
    q_idx = q_sim.topk(size, dim=2).indices.transpose(2, 3)  # (B, H, C, w) query positions per cluster
    k_idx = k_sim.topk(size, dim=2).indices.transpose(2, 3)  # (B, H, C, w) key positions per cluster
    flat_q, flat_k = q_idx.flatten(2), k_idx.flatten(2)  # (B, H, C*w)
    qg = _gather_seq(qn, flat_q).view(batch * heads, clusters, size, -1)  # (B*H, C, w, D)
    kg = _gather_seq(kn, flat_k).view(batch * heads, clusters, size, -1)  # (B*H, C, w, D)
    vg = _gather_seq(v, flat_k).view(batch * heads, clusters, size, -1)  # (B*H, C, w, Dv)
    bias = None  # additive (B*H, C, w, w) or boolean (B*H, C, 1, w) mask, or None
    if self_bias:
        same = (q_idx[..., :, None] == k_idx[..., None, :]).view(batch * heads, clusters, size, size)
        bias = same.to(qn.dtype) * self_bias
    has_key = None
    if host_any(~valid):
        key_ok = torch.gather(valid, 2, flat_k).view(batch * heads, clusters, 1, size)  # (B*H, C, 1, w)
        has_key = key_ok.any(-1, keepdim=True)  # (B*H, C, 1, 1): False only for all-padding sequences
        key_ok = key_ok | ~has_key  # never mask a whole row (it is zeroed below), so nothing turns NaN
        bias = key_ok if bias is None else bias.masked_fill(~key_ok, neg)
    if return_weights:
        scores = torch.matmul(qg, kg.transpose(-1, -2)) * scale  # (B*H, C, w, w)
        if bias is not None:
            scores = scores.masked_fill(~bias, neg) if bias.dtype == torch.bool else scores + bias
        probs = torch.softmax(scores, dim=-1)
        out_c = torch.matmul(probs, vg)  # (B*H, C, w, Dv)
    else:  # fused kernel: about 1.6x faster than matmul + softmax + matmul under autograd on CPU
        out_c = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=bias, scale=scale)  # (B*H, C, w, Dv)
    if has_key is not None:
        out_c = torch.where(has_key, out_c, torch.zeros_like(out_c))
    out_c = out_c.reshape(-1, v.shape[-1])  # (B*H*C*w, Dv)
    rows = _flat_rows(flat_q, length)  # (B*H*C*w,)
    summed = out_c.new_zeros(batch * heads * length, v.shape[-1]).index_add(0, rows, out_c)  # (B*H*N, Dv)
    counts = out_c.new_zeros(batch * heads * length).index_add_(0, rows, out_c.new_ones(rows.shape))  # (B*H*N,)
    out = (summed / counts.clamp(min=1)[:, None]).view(batch, heads, length, -1)  # (B, H, N, Dv)
    counts = counts.view(batch, heads, length)
    if not return_weights:
        return RoutingOutput(out, None)
    share = 1.0 / torch.gather(counts, 2, flat_q).clamp(min=1)  # (B, H, C*w): a row's share of its query
    probs = probs.detach() if has_key is None else probs.detach() * has_key
    rows = probs.view(batch, heads, clusters * size, size) * share[..., None]  # (B, H, C*w, w)
    key_index = flat_k.view(batch, heads, clusters, 1, size).expand(-1, -1, -1, size, -1).flatten(2, 3)
    key_index = torch.where(rows > 0, key_index, torch.full_like(key_index, -1))
    return RoutingOutput(out, AttentionWeights("routing", (), rows, query_index=flat_q, key_index=key_index))


def _valid_tokens(key_padding_mask, batch, heads, length, device) -> torch.Tensor:
    return key_validity(key_padding_mask, batch, length, device, heads)


def routing_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    centroids: torch.Tensor,
    window: int,
    *,
    causal: bool,
    key_padding_mask: torch.Tensor | None = None,
    shared_qk: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
):
    """Routing attention with fixed centroids (the stateless kernel behind :class:`RoutingAttention`).

    Args:
        q, k, v: (B, H, N, D). q and k are layer-normalised here before routing and attention.
        centroids: (H, C, D) unit centroids.
        window: causal: how many earlier same-cluster tokens a query sees; balanced: tokens per cluster.
        causal: strictly causal sorted routing (True) or balanced bidirectional routing (False).
        key_padding_mask: optional (B, N) bool, True marks padding.
        shared_qk: k is q (decoder style): a token's own score is suppressed unless it is alone.
        return_weights: also return :class:`AttentionWeights` (detached).
    """
    check_qkv(q, k, v)
    check_positive("window", window)
    batch, heads, length, dim = q.shape
    check_padding_mask(key_padding_mask, batch, length, q.device)
    if not isinstance(centroids, torch.Tensor) or centroids.dim() != 3 or centroids.shape[0] != heads:
        raise ValueError(f"centroids must have shape (H, C, D) with H = {heads}, got "
                         f"{getattr(centroids, 'shape', None)}")
    if centroids.shape[-1] != dim:
        raise ValueError(f"centroids must have head dim {dim}, got {centroids.shape[-1]}")
    qn = normalize(q)
    kn = qn if shared_qk else normalize(k)
    valid = _valid_tokens(key_padding_mask, batch, heads, length, q.device)
    result = _routed(qn, kn, v, centroids, window, causal, valid, shared_qk, scale, return_weights)
    return (result.out, result.weights) if return_weights else result.out


def similarities(vectors: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of unit vectors (B, H, N, D) to unit centroids (H, C, D) -> (B, H, N, C)."""
    return torch.einsum("bhnd,hcd->bhnc", vectors, centroids.to(vectors.dtype))


def _routed(qn, kn, v, centroids, window, causal, valid, shared_qk, scale, return_weights, q_sim=None, k_sim=None):
    """Route layer-normalised qn, kn (B, H, N, D) with fixed centroids and attend.

    ``q_sim``/``k_sim`` are the centroid similarities when the caller already has them.
    """
    scale = qn.shape[-1] ** -0.5 if scale is None else float(scale)
    self_bias = SHARED_QK_SELF_BIAS if shared_qk else 0.0
    if q_sim is None:
        q_sim = similarities(unit(qn).detach(), centroids)
    if causal:
        return causal_routed(
            qn, kn, v, q_sim.argmax(-1), valid, window, scale, self_bias, return_weights, centroids.shape[1]
        )
    if k_sim is None:
        k_sim = q_sim if shared_qk else similarities(unit(kn).detach(), centroids)
    return balanced_routed(qn, kn, v, q_sim, k_sim, valid, window, scale, self_bias, return_weights)


class KMeans(nn.Module):
    """Per-head spherical k-means centroids, updated online by EMA of the assigned cluster means."""

    def __init__(self, num_heads: int, num_clusters: int, dim: int, decay: float = 0.999, commitment: float = 1e-4):
        super().__init__()
        check_positive("num_clusters", num_clusters)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay, self.commitment = decay, commitment
        self.register_buffer("means", F.normalize(torch.randn(num_heads, num_clusters, dim), dim=-1))

    @property
    def num_clusters(self) -> int:
        return self.means.shape[1]

    @torch.no_grad()
    def update(self, vectors: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> None:
        """EMA step from unit vectors (B, H, N, D) of real tokens and their clusters ids (B, H, N).

        Cluster sums and counts are summed over DDP ranks first, so every rank applies the same step.
        """
        heads, clusters, dim = self.means.shape
        x = vectors.detach().to(self.means.dtype) * valid[..., None]  # padding adds nothing
        slot = ids + clusters * torch.arange(heads, device=ids.device)[None, :, None]  # (B, H, N) in [0, H*C)
        sums = self.means.new_zeros(heads * clusters, dim).index_add_(0, slot.flatten(), x.reshape(-1, dim))
        counts = self.means.new_zeros(heads * clusters).index_add_(
            0, slot.flatten(), valid.flatten().to(self.means.dtype)
        )
        sums, counts = sums.view(heads, clusters, dim), counts.view(heads, clusters).to(self.means.dtype)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        batch_means = sums / counts.clamp(min=1)[..., None]
        blended = F.normalize(self.decay * self.means + (1 - self.decay) * batch_means, dim=-1)
        self.means.copy_(torch.where((counts > 0)[..., None], blended, self.means))

    def commitment_loss(self, vectors: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Weighted mean squared distance of unit vectors (B, H, N, D) to their assigned (fixed) centroid."""
        heads = torch.arange(self.means.shape[0], device=ids.device)[None, :, None]
        nearest = self.means.to(vectors.dtype)[heads, ids]  # (B, H, N, D)
        per_token = (vectors - nearest).pow(2).sum(-1)  # (B, H, N)
        return self.commitment * (per_token * valid).sum() / valid.sum().clamp(min=1)


class RoutingAttention(nn.Module):
    """Routing attention heads with their own k-means state; q, k, v come projected from the caller.

    In train mode the centroids move (EMA) and the commitment loss pulls queries/keys towards them; in
    eval mode the centroids are frozen and the output is deterministic.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        num_clusters: int,
        window: int,
        causal: bool,
        shared_qk: bool = False,
        decay: float = 0.999,
        commitment: float = 1e-4,
    ):
        super().__init__()
        check_positive("num_heads", num_heads)
        check_positive("window", window)
        self.window, self.causal, self.shared_qk = window, causal, shared_qk
        self.kmeans = KMeans(num_heads, num_clusters, head_dim, decay, commitment)

    def forward(self, q, k, v, key_padding_mask=None, return_weights: bool = False) -> RoutingOutput:
        if self.shared_qk:
            k = q
        check_qkv(q, k, v)
        batch, heads, length, _ = q.shape
        check_padding_mask(key_padding_mask, batch, length, q.device)
        qn = normalize(q)
        kn = qn if self.shared_qk else normalize(k)
        valid = _valid_tokens(key_padding_mask, batch, heads, length, q.device)
        means = self.kmeans.means
        q_unit = unit(qn)
        q_sim = similarities(q_unit.detach(), means)  # (B, H, N, C)
        # Routing vectors: queries for causal routing (tokens are filed by their query), both otherwise.
        routes = [(q_unit, q_sim)]
        if not (self.causal or self.shared_qk):
            k_unit = unit(kn)
            routes.append((k_unit, similarities(k_unit.detach(), means)))
        k_sim = routes[-1][1]
        routed = _routed(
            qn, kn, v, means, self.window, self.causal, valid, self.shared_qk, None, return_weights, q_sim, k_sim
        )
        ids = [sim.argmax(-1) for _, sim in routes]  # (B, H, N) each, against the centroids before the update
        aux = sum(self.kmeans.commitment_loss(x, i, valid) for (x, _), i in zip(routes, ids)) / len(routes)
        if self.training:
            self.kmeans.update(
                torch.cat([x for x, _ in routes], dim=2), torch.cat(ids, dim=2), torch.cat([valid] * len(routes), dim=2)
            )
        return RoutingOutput(routed.out, routed.weights, aux)
