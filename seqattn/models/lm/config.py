"""Configuration of decoder-only language models: one dataclass of values.

Each layer's heads are split into local (causal sliding window), routing (causal content-routed, as in the
Routing Transformer), block-routed (MoBA) and full heads, as ``attention`` (a :class:`~seqattn.nn.AttentionConfig`,
                                                                            the same one
every seqattn model uses) says. ``routing_layers`` says which layers route: all of them (-1), none (0), or only
the last k (k > 0, as the paper's PG-19 model routes only in its last layers); in layers that do not route,
the routing and block-routed heads are local heads instead. Language models are causal: ``attention.causal`` is true and
``attention.local.window_right`` is 0, and rotary positions are chosen by ``positions``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from seqattn.nn import AttentionConfig, LocalHeads, RoutingHeads
from seqattn.nn.multihead import nest_flat_keys
from seqattn.utils.values import check_known_keys, from_values, merge_values


def default_attention(**changes) -> AttentionConfig:
    """The LM defaults for ``attention``: 8 heads, 4 local (window 256) + 4 routing (8 clusters, window 256),
    causal. ``changes`` as for :meth:`AttentionConfig.replace` (a section as a mapping of the settings that
    change)."""
    defaults = AttentionConfig(num_heads=8, causal=True, local=LocalHeads(heads=4, window_left=256, window_right=0),
                               routing=RoutingHeads(heads=4, clusters=8, window=256))
    return defaults.replace(**changes)


# The flat keys of LM config.json files written before ``attention`` was nested: old name -> attention field.
_FLAT_ATTENTION_KEYS = {"num_heads": "num_heads", "local_heads": "local.heads", "routing_heads": "routing.heads",
                        "window": "local.window_left", "num_clusters": "routing.clusters",
                        "routing_window": "routing.window", "shared_qk": "routing.shared_qk",
                        "kmeans_decay": "routing.kmeans_decay", "commitment_weight": "routing.commitment_weight"}


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
        rotary = self.positions == "rotary"
        if self.routes(layer):
            return dataclasses.replace(a, rotary=rotary)
        local = dataclasses.replace(a.local, heads=a.local.heads + a.routing.heads + a.block_routed.heads)
        return dataclasses.replace(a, local=local, routing=dataclasses.replace(a.routing, heads=0),
                                   block_routed=dataclasses.replace(a.block_routed, heads=0), rotary=rotary)

    def validate(self) -> None:
        a = self.attention
        if self.vocab_size <= 0:
            raise ValueError(f"vocab_size must be > 0 (set it from the tokenizer), got {self.vocab_size}")
        if self.positions not in ("rotary", "learned"):
            raise ValueError(f"positions must be 'rotary' or 'learned', got {self.positions!r}")
        if not a.causal or a.local.window_right != 0:
            raise ValueError(f"a language model is causal: attention.causal must be true and "
                             f"attention.local.window_right 0, got {a.causal} and {a.local.window_right}")
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
    def from_dict(cls, values: dict) -> LMConfig:
        """From plain values (YAML or config.json); ``attention`` holds only the fields that differ from the
        LM defaults. Attention keys at the top level are refused, with the key they moved to."""
        moved = sorted(set(values) & set(_FLAT_ATTENTION_KEYS))
        if moved:
            raise ValueError("attention settings live under 'attention' now: " + ", ".join(
                f"{key} -> attention.{_FLAT_ATTENTION_KEYS[key]}" for key in moved))
        check_known_keys(cls, values)
        values = dict(values)
        attention = values.get("attention", {})
        if isinstance(attention, dict):
            values["attention"] = AttentionConfig.from_dict(merge_values(dataclasses.asdict(default_attention()),
                                                                         attention))
        return from_values(cls, values)

    @classmethod
    def from_saved(cls, values: dict) -> LMConfig:
        """From a saved model's config.json, including those written with flat attention keys (at the top
        level, or inside ``attention`` before each head kind had its own section)."""
        values = dict(values)
        attention = nest_flat_keys(dict(values.get("attention", {})))
        for key in [key for key in values if key in _FLAT_ATTENTION_KEYS]:
            section, _, name = _FLAT_ATTENTION_KEYS[key].rpartition(".")
            (attention.setdefault(section, {}) if section else attention)[name] = values.pop(key)
        if attention:
            values["attention"] = attention
        return cls.from_dict(values)
