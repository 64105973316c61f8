"""LM configurations: the Routing Transformer paper's models and small CPU ones.

The paper's models (Roy et al. 2021; the hyper-parameters of its released code, ``wikitext103_local_cluster4k``
and ``pg19_local_cluster8k``) mix local heads, which attend to their own block of 256 tokens and the one
before it, with routing heads whose k-means clusters hold about 512 tokens each. Here a local head is a
sliding window of 256 tokens and positions are rotary (relative) instead of the paper's relative embeddings.
The CPU presets are for this project's 2-core machines.
"""
from __future__ import annotations

import dataclasses

from .config import LMConfig, default_attention


def with_attention(config: LMConfig, **changes) -> LMConfig:
    """``config`` with some of its attention settings changed (``with_attention(tiny(), local={"heads": 4})``,
    as :meth:`~seqattn.nn.AttentionConfig.replace` takes them)."""
    return dataclasses.replace(config, attention=config.attention.replace(**changes))


def wikitext103(**overrides) -> LMConfig:
    """Wikitext-103 (``wikitext103_local_cluster4k``): 14 layers, dim 1024, FFN 3072, 16 heads of which 8
    local (window 256) and 8 routing (8 clusters, window 512, shared queries/keys) in every layer, dropout 0.4,
    context 4096."""
    return dataclasses.replace(
        LMConfig(
            dim=1024,
            num_layers=14,
            ffn_mult=3,
            routing_layers=-1,
            max_context=4096,
            dropout=0.4,
            positions="rotary",
            attention=default_attention(
                num_heads=16,
                local=dict(heads=8, window_left=256),
                routing=dict(heads=8, clusters=8, window=512, shared_qk=True),
            ),
        ),
        **overrides,
    )


def pg19(**overrides) -> LMConfig:
    """PG-19 (``pg19_local_cluster8k``): 22 layers, FFN 4096, 8 heads, routing only in the last layer (6 local
    + 2 routing heads there, 16 clusters, window 512; 8 local heads below), local window 256, context 8192,
    no dropout. dim 1024 instead of the paper's 1032: rotary positions need an even head size (1032 / 8 = 129)."""
    return dataclasses.replace(
        LMConfig(
            dim=1024,
            num_layers=22,
            ffn_mult=4,
            routing_layers=1,
            max_context=8192,
            dropout=0.0,
            positions="rotary",
            attention=default_attention(
                num_heads=8, local=dict(heads=6, window_left=256), routing=dict(heads=2, clusters=16, window=512)
            ),
        ),
        **overrides,
    )


def char_cpu(**overrides) -> LMConfig:
    """nanoGPT's shakespeare-char CPU size: 4 layers, 4 heads, dim 128, context 64."""
    return dataclasses.replace(
        LMConfig(
            dim=128,
            num_layers=4,
            routing_layers=0,
            max_context=64,
            dropout=0.0,
            positions="rotary",
            attention=default_attention(
                num_heads=4, local=dict(heads=4, window_left=64), routing=dict(heads=0, clusters=4, window=32)
            ),
        ),
        **overrides,
    )


def small_cpu(**overrides) -> LMConfig:
    """About 10M parameters: 6 layers, dim 256, 4 local + 4 routing heads, context 512."""
    return dataclasses.replace(
        LMConfig(
            dim=256,
            num_layers=6,
            routing_layers=-1,
            max_context=512,
            dropout=0.1,
            positions="rotary",
            attention=default_attention(
                num_heads=8, local=dict(heads=4, window_left=128), routing=dict(heads=4, clusters=8, window=128)
            ),
        ),
        **overrides,
    )


def tiny(**overrides) -> LMConfig:
    """For tests: 2 layers, dim 32, 2 local + 2 routing heads."""
    return dataclasses.replace(
        LMConfig(
            vocab_size=50,
            dim=32,
            num_layers=2,
            routing_layers=-1,
            max_context=64,
            dropout=0.0,
            attention=default_attention(
                num_heads=4, local=dict(heads=2, window_left=4), routing=dict(heads=2, clusters=3, window=4)
            ),
        ),
        **overrides,
    )
