"""Configuration of decoder-only language models: one dataclass of values.

Each layer's heads are split into local (causal sliding window), routing (causal content-routed, as in the
Routing Transformer), block-routed (MoBA) and full heads, as ``attention`` (a :class:`~seqattn.nn.AttentionConfig`, the same one
every seqattn model uses) says. ``routing_layers`` says which layers route: all of them (-1), none (0), or only
the last k (k > 0, as the paper's PG-19 model routes only in its last layers); in layers that do not route,
the routing and block-routed heads are local heads instead. Language models are causal: ``attention.causal`` is true and
``attention.window_right`` is 0, and rotary positions are chosen by ``positions``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from seqattn.nn import AttentionConfig
from seqattn.utils.values import check_known_keys, from_values


def default_attention(**values) -> AttentionConfig:
    """The LM defaults for ``attention``: 8 heads, 4 local (window 256) + 4 routing (8 clusters, window 256),
    causal. ``values`` override single fields."""
    defaults = dict(num_heads=8, local_heads=4, routing_heads=4, causal=True, window_left=256, window_right=0,
                    num_clusters=8, routing_window=256)
    return AttentionConfig(**{**defaults, **values})


# The flat keys of LM config.json files written before ``attention`` was nested: old name -> attention field.
_FLAT_ATTENTION_KEYS = {"num_heads": "num_heads", "local_heads": "local_heads", "routing_heads": "routing_heads",
                        "window": "window_left", "num_clusters": "num_clusters", "routing_window": "routing_window",
                        "shared_qk": "routing_shared_qk", "kmeans_decay": "kmeans_decay",
                        "commitment_weight": "commitment_weight"}


@dataclass
class LMConfig:
    vocab_size: int = 0  # set from the tokenizer when 0
    dim: int = 512
    num_layers: int = 8
    ffn_mult: int = 4
    attention: AttentionConfig = field(default_factory=default_attention)  # the heads of a routing layer
    routing_layers: int = -1  # -1: every layer routes; 0: none; k > 0: the last k layers
    positions: str = "rotary"  # "rotary" (relative, any length) or "learned" (absolute, up to max_context)
    max_context: int = 1024  # training sequence length; the limit for learned positions
    dropout: float = 0.0
    tie_embeddings: bool = True

    def routes(self, layer: int) -> bool:
        if self.routing_layers < 0:
            return True
        return layer >= self.num_layers - self.routing_layers

    def attention_for(self, layer: int) -> AttentionConfig:
        """Layer ``layer``'s heads: ``attention``, with its routing and block-routed heads made local where the
        layer does not route, and rotary positions when ``positions`` is "rotary"."""
        a = self.attention
        routes = self.routes(layer)
        routing = a.routing_heads if routes else 0
        block_routed = a.block_routed_heads if routes else 0
        local = a.local_heads + a.routing_heads - routing + a.block_routed_heads - block_routed
        return dataclasses.replace(a, local_heads=local, routing_heads=routing, block_routed_heads=block_routed,
                                   rotary=self.positions == "rotary")

    def validate(self) -> None:
        a = self.attention
        if self.vocab_size <= 0:
            raise ValueError(f"vocab_size must be > 0 (set it from the tokenizer), got {self.vocab_size}")
        if self.positions not in ("rotary", "learned"):
            raise ValueError(f"positions must be 'rotary' or 'learned', got {self.positions!r}")
        if not a.causal or a.window_right != 0:
            raise ValueError(f"a language model is causal: attention.causal must be true and attention.window_right "
                             f"0, got {a.causal} and {a.window_right}")
        if a.rotary:
            raise ValueError("attention.rotary is set by positions: 'rotary'; leave attention.rotary false")
        if self.dim % a.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by attention.num_heads {a.num_heads}")
        if self.routing_layers > self.num_layers:
            raise ValueError(f"routing_layers {self.routing_layers} exceeds num_layers {self.num_layers}")
        for layer in range(self.num_layers):
            self.attention_for(layer).validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LMConfig":
        """From plain values (YAML or config.json); ``attention`` holds only the fields that differ from the
        LM defaults. Attention keys at the top level are refused, with the key they moved to."""
        moved = sorted(set(values) & set(_FLAT_ATTENTION_KEYS))
        if moved:
            raise ValueError("attention settings live under 'attention' now: " + ", ".join(
                f"{key} -> attention.{_FLAT_ATTENTION_KEYS[key]}" for key in moved))
        check_known_keys(cls, values, "LM config")
        values = dict(values)
        attention = values.get("attention", {})
        if isinstance(attention, dict):
            check_known_keys(AttentionConfig, attention, "LM attention config")
            defaults = dataclasses.asdict(default_attention())
            values["attention"] = from_values(AttentionConfig, {**defaults, **attention}, "attention")
        return from_values(cls, values)

    @classmethod
    def from_saved(cls, values: dict) -> "LMConfig":
        """From a saved model's config.json, including those written with flat attention keys."""
        values = dict(values)
        flat = {key: values.pop(key) for key in list(values) if key in _FLAT_ATTENTION_KEYS}
        if flat:
            attention = dict(values.get("attention", {}))
            attention.update({_FLAT_ATTENTION_KEYS[key]: value for key, value in flat.items()})
            values["attention"] = attention
        return cls.from_dict(values)
