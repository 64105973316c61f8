"""Token-by-token attention for generation, with a cache whose size does not grow with the sequence for
local and routed heads.

- local heads keep a ring buffer of their last ``window_left`` keys/values (memory O(window); with per-head
  windows the largest, each head masking what lies beyond its own);
- dilated heads keep the last ``dilation * window`` and see every ``dilation``-th of them;
- causal routed heads keep, per cluster, a ring buffer of the last ``window`` keys/values of
  tokens filed in that cluster (memory O(clusters * window)): exactly what the causal routing kernel lets a
  query see (its own cluster's most recent tokens, plus itself);
- causal global heads keep their window's ring buffer plus running poolings (memory O(window + tokens)):
  the summaries of the complete past blocks, and the pooling of the current block, folded in when it ends;
- block-routed heads keep every key/value (any complete past block may be chosen) and the mean key of each
  complete block (memory O(length));
- full heads keep every key/value (memory O(length)).

Keys are stored after rotary (and, for routed heads, after the routing layer norm), so a cached step
computes the same scores as the full forward pass; the order of keys inside a buffer does not matter to
the softmax. Each head kind's module (:mod:`seqattn.nn.heads`) fills its buffer from a prompt's full forward
pass (``prefill``) and advances it one token at a time (``step``, through :func:`attend_one`); routed heads
need frozen centroids (eval mode) to match the forward pass.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from .block_routing import block_means


@dataclass
class RingBuffer:
    """The last ``size`` keys/values of every (batch, head): keys (B, h, W, D), values (B, h, W, Dv)."""

    keys: torch.Tensor
    values: torch.Tensor
    filled: int = 0  # slots holding a key (every row advances together)
    next: int = 0  # slot the next key goes to
    windows: torch.Tensor | None = None  # (h,) each head's own window when heads differ (size is the largest)
    stride: int = 1  # dilated heads see only keys whose distance is a multiple of this

    @classmethod
    def empty(cls, batch, heads, size, dim, value_dim, like: torch.Tensor, windows=None,
              stride: int = 1) -> RingBuffer:
        own = None if windows is None or len(set(windows)) == 1 else torch.tensor(windows, device=like.device)
        return cls(like.new_zeros(batch, heads, size, dim), like.new_zeros(batch, heads, size, value_dim),
                   windows=own, stride=stride)

    @property
    def size(self) -> int:
        return self.keys.shape[2]

    def fill(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Load the last ``size`` of a prompt's keys/values (B, h, N, D)."""
        length = keys.shape[2]
        if self.size == 0:
            return
        last = torch.arange(max(0, length - self.size), length, device=keys.device)  # positions kept
        self.keys[:, :, last % self.size] = keys[:, :, last]
        self.values[:, :, last % self.size] = values[:, :, last]
        self.filled, self.next = min(length, self.size), length % self.size

    def push(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """Append one key/value (B, h, D), overwriting the oldest when full."""
        if self.size == 0:
            return
        self.keys[:, :, self.next] = key
        self.values[:, :, self.next] = value
        self.next = (self.next + 1) % self.size
        self.filled = min(self.filled + 1, self.size)

    def valid(self) -> torch.Tensor:
        """(W,) bool: slots that hold a key; (h, W) with per-head windows: slots within each head's window."""
        slots = torch.arange(self.size, device=self.keys.device)
        held = slots < self.filled
        if self.windows is None and self.stride == 1:
            return held
        age = (self.next - 1 - slots) % self.size + 1  # 1 = the latest key, counted back from the new token
        if self.stride > 1:
            held = held & (age % self.stride == 0)
        if self.windows is None:
            return held
        return held[None, :] & (age[None, :] <= self.windows[:, None])  # (h, W)


@dataclass
class ClusterBuffer:
    """Per (batch, head, cluster), the last ``size`` routed keys/values: keys (B, h, C, W, D)."""

    keys: torch.Tensor
    values: torch.Tensor
    filled: torch.Tensor  # (B, h, C) long
    next: torch.Tensor  # (B, h, C) long

    @classmethod
    def empty(cls, batch, heads, clusters, size, dim, value_dim, like: torch.Tensor) -> ClusterBuffer:
        counts = torch.zeros(batch, heads, clusters, dtype=torch.long, device=like.device)
        return cls(like.new_zeros(batch, heads, clusters, size, dim),
                   like.new_zeros(batch, heads, clusters, size, value_dim), counts, counts.clone())

    @property
    def size(self) -> int:
        return self.keys.shape[3]

    def _flat_slots(self, ids: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Row numbers in keys.view(-1, D) of (batch, head, ids, slots); ids and slots (B, h, M)."""
        batch, heads, clusters, size = self.keys.shape[:4]
        bh = torch.arange(batch * heads, device=ids.device).view(batch, heads, 1)
        return ((bh * clusters + ids) * size + slots).flatten()

    def fill(self, ids: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Load a prompt: ids (B, h, N) cluster of each token; keys/values (B, h, N, D)."""
        batch, heads, clusters, size = self.keys.shape[:4]
        length = ids.shape[2]
        positions = torch.arange(length, device=ids.device)
        order = torch.argsort(ids * length + positions, dim=-1)  # (B, h, N) sorted by (cluster, position)
        sorted_ids = torch.gather(ids, 2, order)
        counts = torch.zeros(batch, heads, clusters, dtype=torch.long, device=ids.device)
        counts.scatter_add_(2, ids, torch.ones_like(ids))  # (B, h, C) tokens per cluster
        starts = torch.cumsum(counts, dim=2) - counts  # (B, h, C) first sorted index of each cluster
        rank = positions.expand_as(order) - torch.gather(starts, 2, sorted_ids)  # (B, h, N) index in cluster
        keep = rank >= torch.gather(counts, 2, sorted_ids) - size  # the last `size` tokens of each cluster
        # For every buffer slot, the sorted token that fills it (-1: none). Tokens that are not kept write to
        # a sink entry past the end, so no shape depends on how many are kept (nothing read back).
        slots = batch * heads * clusters * size
        target = torch.where(keep.flatten(), self._flat_slots(sorted_ids, rank % size), slots)  # (B*h*N,)
        source = torch.full((slots + 1,), -1, dtype=torch.long, device=ids.device)
        source = source.scatter_(0, target, torch.arange(target.numel(), device=ids.device))[:slots]  # (slots,)
        filled = (source >= 0)[:, None]  # (slots, 1)
        source = source.clamp(min=0)
        dim, value_dim = keys.shape[-1], values.shape[-1]
        sorted_keys = torch.gather(keys, 2, order[..., None].expand(-1, -1, -1, dim)).reshape(-1, dim)
        sorted_values = torch.gather(values, 2, order[..., None].expand(-1, -1, -1, value_dim)).reshape(-1, value_dim)
        flat_keys, flat_values = self.keys.view(-1, dim), self.values.view(-1, value_dim)
        flat_keys.copy_(torch.where(filled, sorted_keys[source].to(flat_keys.dtype), flat_keys))
        flat_values.copy_(torch.where(filled, sorted_values[source].to(flat_values.dtype), flat_values))
        self.filled = counts.clamp(max=size)
        self.next = counts % size

    def gather(self, ids: torch.Tensor):
        """The buffers of cluster ``ids`` (B, h): keys (B, h, W, D), values (B, h, W, Dv), valid (B, h, W)."""
        index = ids[:, :, None, None, None]
        keys = torch.gather(self.keys, 2, index.expand(-1, -1, 1, *self.keys.shape[3:]))[:, :, 0]
        values = torch.gather(self.values, 2, index.expand(-1, -1, 1, *self.values.shape[3:]))[:, :, 0]
        filled = torch.gather(self.filled, 2, ids[..., None])  # (B, h, 1)
        valid = torch.arange(self.size, device=ids.device) < filled  # (B, h, W)
        return keys, values, valid

    def push(self, ids: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        """Append one token per (batch, head): ids (B, h), key (B, h, D), value (B, h, Dv)."""
        slots = torch.gather(self.next, 2, ids[..., None])  # (B, h, 1)
        rows = self._flat_slots(ids[..., None], slots)
        self.keys.view(-1, key.shape[-1]).index_copy_(0, rows, key.reshape(-1, key.shape[-1]))
        self.values.view(-1, value.shape[-1]).index_copy_(0, rows, value.reshape(-1, value.shape[-1]))
        one = torch.ones_like(slots)
        self.next.scatter_(2, ids[..., None], (slots + one) % self.size)
        filled = torch.gather(self.filled, 2, ids[..., None])  # (B, h, 1)
        self.filled.scatter_(2, ids[..., None], (filled + one).clamp(max=self.size))


@dataclass
class GrowingBuffer:
    """Every key/value so far: keys (B, h, T, D)."""

    keys: torch.Tensor
    values: torch.Tensor

    def push(self, key: torch.Tensor, value: torch.Tensor) -> None:
        self.keys = torch.cat([self.keys, key[:, :, None]], dim=2)
        self.values = torch.cat([self.values, value[:, :, None]], dim=2)


@dataclass
class BlockBuffer:
    """Block-routed heads: every key/value so far (B, h, T, D) and the mean key of each complete block
    (B, h, T // block, D), which the gate scores."""

    keys: torch.Tensor
    values: torch.Tensor
    means: torch.Tensor
    block: int

    @classmethod
    def from_prompt(cls, keys: torch.Tensor, values: torch.Tensor, block: int) -> BlockBuffer:
        complete = keys.shape[2] // block * block  # the prompt's complete blocks: [0, complete)
        body = keys[:, :, :complete]
        means, _ = block_means(body, torch.ones(body.shape[:3], dtype=torch.bool, device=keys.device), block)
        return cls(keys.clone(), values.clone(), means, block)  # means (B, h, complete // block, D)

    def push(self, key: torch.Tensor, value: torch.Tensor) -> None:
        self.keys = torch.cat([self.keys, key[:, :, None]], dim=2)
        self.values = torch.cat([self.values, value[:, :, None]], dim=2)
        if self.keys.shape[2] % self.block == 0:  # a block just completed
            last = self.keys[:, :, -self.block :].mean(2, keepdim=True)  # (B, h, 1, D)
            self.means = torch.cat([self.means, last], dim=2)

    def visible(self, query: torch.Tensor, top_k: int):
        """Keys (B, h, M, D) and values a new query (B, h, D) sees: its block so far and the ``top_k`` complete
        blocks whose mean key scores highest against it (its own key is added by the caller)."""
        dim = self.keys.shape[-1]
        own_start = self.means.shape[2] * self.block
        parts_k, parts_v = [self.keys[:, :, own_start:]], [self.values[:, :, own_start:]]
        chosen_count = min(top_k, self.means.shape[2])
        if chosen_count:
            gate = torch.einsum("bhd,bhud->bhu", query.float(), self.means.float())  # (B, h, complete)
            chosen = gate.topk(chosen_count, dim=-1).indices  # (B, h, k)
            slots = (chosen[..., None] * self.block + torch.arange(self.block, device=query.device)).flatten(2)
            parts_k.append(torch.gather(self.keys, 2, slots[..., None].expand(-1, -1, -1, dim)))  # (B, h, k*s, D)
            parts_v.append(torch.gather(self.values, 2, slots[..., None].expand(-1, -1, -1, self.values.shape[-1])))
        return torch.cat(parts_k, dim=2), torch.cat(parts_v, dim=2)


@dataclass
class SummaryBuffer:
    """Causal global heads: the band's ring buffer and two running poolings, each a tuple (log mass (B, h, g),
    mean key (B, h, g, D), mean value (B, h, g, Dv), mean position (B, h, g)): ``committed`` over the complete
    past blocks (what the next query's summaries are) and ``pending`` over the current block so far."""

    ring: RingBuffer
    committed: tuple
    pending: tuple
    block: int


def _tensor_bytes(item) -> int:
    """Bytes held by the tensors of a buffer (dataclass fields, tuples, nested buffers)."""
    if isinstance(item, torch.Tensor):
        return item.numel() * item.element_size()
    if isinstance(item, (tuple, list)):
        return sum(_tensor_bytes(part) for part in item)
    if dataclasses.is_dataclass(item):
        return sum(_tensor_bytes(getattr(item, f.name)) for f in dataclasses.fields(item))
    return 0


@dataclass
class LayerCache:
    """One attention layer's cache: a buffer per head group, and the next token's position."""

    buffers: dict = field(default_factory=dict)  # head kind -> the buffer its module's prefill made
    position: int = 0

    def memory_bytes(self) -> int:
        return sum(_tensor_bytes(buffer) for buffer in self.buffers.values())


def attend_one(query, keys, values, valid, own_key, own_value, own_bias: float = 0.0) -> torch.Tensor:
    """One query per (batch, head) over buffered keys and its own key, the scores scaled by ``D ** -0.5``.

    query, own_key (B, h, D); keys (B, h, W, D); valid (B, h, W), (h, W) or (W,) bool; values (B, h, W, Dv);
    ``own_bias`` is added to the query's score for its own key -> (B, h, Dv).
    """
    scale = query.shape[-1] ** -0.5
    scores = torch.einsum("bhd,bhwd->bhw", query, keys) * scale  # (B, h, W)
    scores = scores.masked_fill(~valid, float("-inf"))
    own = (query * own_key).sum(-1, keepdim=True) * scale + own_bias  # (B, h, 1)
    probs = torch.softmax(torch.cat([scores, own], dim=-1), dim=-1)  # (B, h, W + 1)
    return torch.einsum("bhw,bhwd->bhd", probs[..., :-1], values) + probs[..., -1:] * own_value
