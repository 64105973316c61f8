"""LM configurations: the Routing Transformer paper's models and small CPU ones.

The paper (Roy et al. 2021, Table 5 and section 5) uses local attention with windows of 256-512 and 8
routing heads with k-means clusters; on PG-19 only the last layers route. Sizes here follow those
descriptions; the CPU presets are for this project's 2-core machines.
"""
from __future__ import annotations

import dataclasses

from .config import LMConfig


def wikitext103(**overrides) -> LMConfig:
    """Wikitext-103 word/subword model: 10 layers, 16 heads (8 local, window 256 + 8 routing, 16 clusters),
    dim 1024, context 3072."""
    return dataclasses.replace(LMConfig(
        dim=1024, num_layers=10, num_heads=16, local_heads=8, routing_heads=8, routing_layers=-1, window=256,
        num_clusters=16, routing_window=256, max_context=3072, dropout=0.3, positions="rotary",
    ), **overrides)


def pg19(**overrides) -> LMConfig:
    """PG-19 book model: 22 layers, dim 1024 (the paper's 1032, rounded to a multiple of the head count),
    16 heads; routing heads only in the last 2 layers (8 local + 8 routing there, all 16 local below),
    window 512, context 8192."""
    return dataclasses.replace(LMConfig(
        dim=1024, num_layers=22, num_heads=16, local_heads=8, routing_heads=8, routing_layers=2, window=512,
        num_clusters=16, routing_window=512, max_context=8192, dropout=0.0, positions="rotary",
    ), **overrides)


def char_cpu(**overrides) -> LMConfig:
    """nanoGPT's shakespeare-char CPU size: 4 layers, 4 heads, dim 128, context 64."""
    return dataclasses.replace(LMConfig(
        dim=128, num_layers=4, num_heads=4, local_heads=4, routing_heads=0, routing_layers=0, window=64,
        num_clusters=4, routing_window=32, max_context=64, dropout=0.0, positions="rotary",
    ), **overrides)


def small_cpu(**overrides) -> LMConfig:
    """About 10M parameters: 6 layers, dim 256, 4 local + 4 routing heads, context 512."""
    return dataclasses.replace(LMConfig(
        dim=256, num_layers=6, num_heads=8, local_heads=4, routing_heads=4, routing_layers=-1, window=128,
        num_clusters=8, routing_window=128, max_context=512, dropout=0.1, positions="rotary",
    ), **overrides)


def tiny(**overrides) -> LMConfig:
    """For tests: 2 layers, dim 32, 2 local + 2 routing heads."""
    return dataclasses.replace(LMConfig(
        vocab_size=50, dim=32, num_layers=2, num_heads=4, local_heads=2, routing_heads=2, routing_layers=-1,
        window=4, num_clusters=3, routing_window=4, max_context=64, dropout=0.0,
    ), **overrides)
