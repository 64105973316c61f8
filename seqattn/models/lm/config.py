"""Configuration of decoder-only language models: one dataclass of values.

Each layer's heads are split into local (causal sliding window), routing (causal content-routed, as in the
Routing Transformer) and full heads. ``routing_layers`` says which layers route: all of them (-1), none (0),
or only the last k (k > 0, as the paper's PG-19 model routes only in its last layers); in layers that do
not route, the routing heads are local heads instead.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from seqattn.nn import AttentionConfig
from seqattn.utils.values import check_known_keys


@dataclass
class LMConfig:
    vocab_size: int = 0  # set from the tokenizer when 0
    dim: int = 512
    num_layers: int = 8
    num_heads: int = 8
    ffn_mult: int = 4
    local_heads: int = 4
    routing_heads: int = 4  # per routing layer; local in the others; the rest of num_heads are full heads
    routing_layers: int = -1  # -1: every layer routes; 0: none; k > 0: the last k layers
    window: int = 256  # local heads: a token sees itself and the `window` tokens before it
    num_clusters: int = 8
    routing_window: int = 256  # routing heads: the most recent same-cluster tokens a token sees
    shared_qk: bool = False  # routing with shared queries/keys (the paper's LMs)
    kmeans_decay: float = 0.999
    commitment_weight: float = 1e-4
    positions: str = "rotary"  # "rotary" (relative, any length) or "learned" (absolute, up to max_context)
    max_context: int = 1024  # training sequence length; the limit for learned positions
    dropout: float = 0.0
    tie_embeddings: bool = True

    def routes(self, layer: int) -> bool:
        if self.routing_layers < 0:
            return True
        return layer >= self.num_layers - self.routing_layers

    def attention_for(self, layer: int) -> AttentionConfig:
        routing = self.routing_heads if self.routes(layer) else 0
        local = self.local_heads + (self.routing_heads - routing)
        return AttentionConfig(
            num_heads=self.num_heads, local_heads=local, routing_heads=routing, causal=True,
            window_left=self.window, window_right=0, num_clusters=self.num_clusters,
            routing_window=self.routing_window, routing_shared_qk=self.shared_qk, kmeans_decay=self.kmeans_decay,
            commitment_weight=self.commitment_weight, rotary=self.positions == "rotary",
        )

    def validate(self) -> None:
        if self.vocab_size <= 0:
            raise ValueError(f"vocab_size must be > 0 (set it from the tokenizer), got {self.vocab_size}")
        if self.positions not in ("rotary", "learned"):
            raise ValueError(f"positions must be 'rotary' or 'learned', got {self.positions!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.local_heads + self.routing_heads > self.num_heads:
            raise ValueError(f"local_heads {self.local_heads} + routing_heads {self.routing_heads} exceed "
                             f"num_heads {self.num_heads}")
        if self.routing_layers > self.num_layers:
            raise ValueError(f"routing_layers {self.routing_layers} exceeds num_layers {self.num_layers}")
        for layer in range(self.num_layers):
            self.attention_for(layer).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LMConfig":
        check_known_keys(cls, values, "LM config")
        return cls(**values)
