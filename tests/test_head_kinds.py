"""The head-kind protocol: a kind written outside seqattn plugs into a layer through its section alone, and
configs nest by kind (flat keys refused with where they moved, saved flat directories still load)."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch
from dense_reference import masked_attention
from torch import nn

from seqattn.models.io import load_model, save_model
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, presets
from seqattn.nn import AttentionConfig, HeadKind, HeadOutput, HeadSection, LocalHeads, MultiHeadAttention, RoutingHeads
from seqattn.nn.heads import CacheUnsupported
from seqattn.nn.incremental import LayerCache
from seqattn.nn.multihead import FLAT_KEYS
from seqattn.train.config_io import ConfigError, build


def _strided_allowed(length: int, stride: int, causal: bool, key_padding_mask=None) -> torch.Tensor:
    """(B or 1, 1, N, N) bool: every stride-th key (and, causal, no later one), no padding."""
    keys = torch.arange(length)
    allowed = (keys % stride == 0)[None, :].expand(length, length)
    if causal:
        allowed = allowed & (keys[None, :] <= keys[:, None])
    allowed = allowed[None, None]
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    return allowed


@dataclass
class StridedHeads(HeadSection):
    """The worked example of docs/DESIGN.md §2b: heads that see every ``stride``-th key."""

    kind: ClassVar[str] = "strided"
    stride: int = 3

    def validate(self, causal: bool) -> None:
        super().validate(causal)
        if self.heads and self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")

    def keys_per_query(self, length: int) -> float:
        return math.ceil(length / self.stride)

    def build(self, head_dim: int, causal: bool) -> StridedKind:
        return StridedKind(self.stride, causal)


class StridedKind(nn.Module, HeadKind):
    kind: ClassVar[str] = "strided"
    module_name: ClassVar[str] = "strided"

    def __init__(self, stride: int, causal: bool):
        super().__init__()
        self.stride, self.causal = stride, causal

    def forward(self, q, k, v, key_padding_mask=None, return_weights: bool = False) -> HeadOutput:
        allowed = _strided_allowed(q.shape[2], self.stride, self.causal, key_padding_mask)
        out, _ = masked_attention(q, k, v, allowed)
        return HeadOutput(out)


@dataclass
class ConfigWithStrided(AttentionConfig):
    strided: StridedHeads = field(default_factory=StridedHeads)


def test_a_new_head_kind_needs_only_its_section():
    torch.manual_seed(0)
    config = ConfigWithStrided(num_heads=4, local=LocalHeads(heads=2, window_left=2, window_right=1),
                               strided=StridedHeads(heads=1, stride=3))
    assert [s.kind for s in config.sections() if s.heads] == ["local", "strided", "full"]
    layer = MultiHeadAttention(16, config).double()
    assert [g[0] for g in layer.head_groups()] == ["local", "strided", "full"]
    x = torch.randn(2, 11, 16, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 11, dtype=torch.bool)
    mask[1, 8:] = True
    out = layer(x, mask).out
    q, k, v = layer.project(x)
    keys = torch.arange(11)
    band = (keys[None, :] >= keys[:, None] - 2) & (keys[None, :] <= keys[:, None] + 1)
    parts = [masked_attention(q[:, :2], k[:, :2], v[:, :2], band[None, None] & ~mask[:, None, None, :])[0],
             masked_attention(q[:, 2:3], k[:, 2:3], v[:, 2:3], _strided_allowed(11, 3, False, mask))[0],
             masked_attention(q[:, 3:], k[:, 3:], v[:, 3:], ~mask[:, None, None, :].expand(2, 1, 11, 11))[0]]
    want = layer.out_proj(torch.cat(parts, 1).transpose(1, 2).reshape(2, 11, 16))
    torch.testing.assert_close(out, want, atol=1e-10, rtol=1e-10)
    assert config.reach is None and config.exportable  # an unbounded kind; exportable by default
    with pytest.raises(CacheUnsupported, match="does not support strided heads"):
        MultiHeadAttention(16, ConfigWithStrided(num_heads=2, causal=True, local=LocalHeads(window_right=0),
                                                 strided=StridedHeads(heads=2))).double()(x[:, :5].detach(),
                                                                                 cache=LayerCache())
    with pytest.raises(ValueError, match="strided: stride must be >= 1"):
        ConfigWithStrided(num_heads=2, strided=StridedHeads(heads=1, stride=0)).validate()


def test_every_flat_key_is_refused_with_the_key_it_moved_to():
    for key, moved in FLAT_KEYS.items():
        value = 1 if key != "local_windows" else None
        with pytest.raises(ConfigError, match=rf"attention\.{key} -> attention\.{re.escape(moved)}"):
            build(AttentionConfig, {"num_heads": 4, key: value}, "attention")


def test_nested_keys_are_typed_and_unknown_ones_named():
    config = build(AttentionConfig, {"num_heads": 4, "local": {"heads": 2, "window_left": 5},
                                     "global_tokens": {"heads": 1, "pooling": "mean", "tokens": 1}})
    assert config.local == LocalHeads(heads=2, window_left=5) and config.global_tokens.pooling == "mean"
    with pytest.raises(ConfigError, match="pooling is 'max'.*expected one of 'learned', 'mean'"):
        build(AttentionConfig, {"global_tokens": {"pooling": "max"}})
    with pytest.raises(ConfigError, match=r"unknown config key\(s\): attention.local.widow"):
        build(AttentionConfig, {"local": {"widow": 3}})


def test_a_ctc_model_saved_with_flat_attention_keys_loads(tmp_path):
    torch.manual_seed(0)
    config = presets.tiny(vocab_size=6)
    config.attention = AttentionConfig(num_heads=4, local=LocalHeads(heads=2, window_left=5, window_right=3),
                                       routing=RoutingHeads(heads=1, clusters=2, window=4))
    model = Wav2Vec2ForCTC(config).eval()
    model_dir = save_model(model, tmp_path / "ctc")
    meta = json.loads((model_dir / "config.json").read_text())
    meta["config"]["attention"] = {  # the layout every directory written before the sections had
        "num_heads": 4, "local_heads": 2, "routing_heads": 1, "window_heads": 0, "pooled_heads": 0,
        "dilated_heads": 0, "global_heads": 0, "block_routed_heads": 0, "causal": False, "window_left": 5,
        "window_right": 3, "local_windows": None, "num_clusters": 2, "routing_window": 4, "routing_shared_qk": False,
        "kmeans_decay": 0.999, "commitment_weight": 1e-4, "block_window": 64, "block_shift": 0, "pool_size": 4,
        "dilation": 4, "dilated_window": 16, "global_tokens": 4, "global_pooling": "learned", "global_window": 64,
        "global_block": 64, "routed_block": 64, "routed_top_k": 2, "rotary": False, "rotary_base": 10000.0}
    (model_dir / "config.json").write_text(json.dumps(meta))
    loaded = load_model(model_dir)
    assert loaded.config.attention == config.attention
    wave = torch.randn(1, 4000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave)[0], model(wave)[0])


def test_an_lm_saved_with_flat_attention_keys_loads(tmp_path):
    from seqattn.models.lm import TransformerLM, presets

    torch.manual_seed(0)
    config = presets.with_attention(presets.tiny(vocab_size=40), local={"window_left": 5},
                                    routing={"clusters": 3, "window": 6})
    model = TransformerLM(config).eval()
    model_dir = save_model(model, tmp_path / "lm")
    meta = json.loads((model_dir / "config.json").read_text())
    attention = meta["config"]["attention"]
    local, routing = attention.pop("local"), attention.pop("routing")
    for section in ("shifted_window", "pooled", "dilated", "global_tokens", "block_routed"):
        attention.pop(section)
    attention.update(local_heads=local["heads"], window_left=local["window_left"], window_right=0,
                     routing_heads=routing["heads"], num_clusters=routing["clusters"],
                     routing_window=routing["window"])  # as directories saved before the sections wrote it
    (model_dir / "config.json").write_text(json.dumps(meta))
    loaded = load_model(model_dir)
    assert loaded.config.attention == config.attention
    tokens = torch.randint(0, 40, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens).logits, model(tokens).logits)
