"""Preset configurations as functions (call with no arguments; keyword overrides replace fields).

``base()`` and ``large()`` are the published wav2vec 2.0 sizes (95M and 317M parameters); ``small()`` and
``tiny()`` train on a laptop CPU.
"""
from __future__ import annotations

import dataclasses

from seqattn.nn import AttentionConfig

from .config import Wav2Vec2Config


def base(**overrides) -> Wav2Vec2Config:
    """wav2vec 2.0 BASE: 12 post-LN layers, 768 dims, GroupNorm extractor (fairseq/HF facebook/wav2vec2-base)."""
    return dataclasses.replace(Wav2Vec2Config(), **overrides)


def large(**overrides) -> Wav2Vec2Config:
    """wav2vec 2.0 LARGE (LV-60 / XLS-R style): 24 pre-LN layers, 1024 dims, layer-norm extractor, conv bias."""
    config = Wav2Vec2Config(
        extractor_mode="layer_norm", conv_bias=True, embed_dim=1024, ffn_dim=4096, num_layers=24,
        attention=AttentionConfig(num_heads=16), layer_norm_first=True, final_dim=768, dropout=0.0,
        dropout_input=0.0, dropout_features=0.0, layerdrop=0.0, feature_grad_mult=1.0,
        latent_temp=[2.0, 0.1, 0.999995],
    )
    return dataclasses.replace(config, **overrides)


def small(**overrides) -> Wav2Vec2Config:
    """About 6M parameters: 4 layers of 256 dims over a 256-channel CNN. Pretrains on CPU in tens of minutes."""
    config = Wav2Vec2Config(
        conv_layers=[[256, 10, 5]] + [[256, 3, 2]] * 4 + [[256, 2, 2]] * 2, embed_dim=256, ffn_dim=1024,
        num_layers=4, attention=AttentionConfig(num_heads=4), conv_pos=64, conv_pos_groups=8, final_dim=128,
        latent_vars=64, latent_groups=2, num_negatives=50, layerdrop=0.0, dropout=0.05, dropout_input=0.05,
        dropout_features=0.05,
    )
    return dataclasses.replace(config, **overrides)


def tiny(**overrides) -> Wav2Vec2Config:
    """About 0.5M parameters, for tests and smoke runs."""
    config = Wav2Vec2Config(
        conv_layers=[[64, 10, 5]] + [[64, 3, 2]] * 4 + [[64, 2, 2]] * 2, embed_dim=96, ffn_dim=192, num_layers=2,
        attention=AttentionConfig(num_heads=4), conv_pos=16, conv_pos_groups=4, final_dim=48, latent_vars=32,
        latent_groups=2, num_negatives=20, layerdrop=0.0, dropout=0.0, dropout_input=0.0, dropout_features=0.0,
    )
    return dataclasses.replace(config, **overrides)
