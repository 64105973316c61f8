"""Configuration of wav2vec 2.0 models: one dataclass of values, no behaviour.

Field names follow fairseq's ``Wav2Vec2Config`` where one exists, so that its checkpoints map over
directly. The transformer's attention is a :class:`seqattn.nn.AttentionConfig`: the same for every layer,
or one per layer through ``layer_attention``.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal

from seqattn.nn import AttentionConfig
from seqattn.utils.values import check_known_keys, from_values

from .conv_fbank import conv_bins, conv_feature_dim

BASE_CONV_LAYERS = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2  # 320x downsampling: 20 ms frames


FrontEndName = Literal["cnn", "fbank"]
FbankSubsampling = Literal["stack", "conv"]
EncoderBlock = Literal["transformer", "conformer"]
Objective = Literal["contrastive", "bestrq"]
ConformerNorm = Literal["layer", "batch"]
ExtractorMode = Literal["default", "layer_norm"]
FRONT_ENDS = typing.get_args(FrontEndName)
FBANK_SUBSAMPLINGS = typing.get_args(FbankSubsampling)
ENCODER_BLOCKS = typing.get_args(EncoderBlock)
OBJECTIVES = typing.get_args(Objective)
CONFORMER_NORMS = typing.get_args(ConformerNorm)


@dataclass
class Wav2Vec2Config:
    # front end: "cnn" (fairseq's raw-waveform CNN below, for IndicWav2Vec / fairseq / HF checkpoints) or
    # "fbank" (80-bin Kaldi log-mel, normalised per utterance, fbank_stack 10 ms frames per encoder frame)
    frontend: FrontEndName = "cnn"
    fbank_bins: int = 80
    fbank_stack: int = 4  # 2, 4, 8: encoder frames of 20, 40, 80 ms
    # how 10 ms frames become encoder frames: "stack" (fbank_stack frames side by side, no parameters) or
    # "conv" (log2(fbank_stack) 3x3 stride-2 convolutions over time and frequency with ReLU, each of
    # fbank_conv_channels channels, as in ESPnet/icefall Conformers; see conv_fbank.py)
    fbank_subsampling: FbankSubsampling = "stack"
    fbank_conv_channels: int = 128
    # SpecAugment frequency masking of the fbank in training (time masking is mask_prob / mask_length):
    # fbank_freq_masks bands of up to fbank_freq_width bins per utterance, the same bins in every stacked frame
    # (with conv subsampling: zeroed in the log-mel before the convolutions, so the contrastive objective's
    # quantizer, which reads the features, sees them masked too; BEST-RQ's targets are always unmasked)
    fbank_freq_masks: int = 0
    fbank_freq_width: int = 15
    # feature CNN: (channels, kernel, stride) per layer
    conv_layers: list[list[int]] = field(default_factory=lambda: [list(layer) for layer in BASE_CONV_LAYERS])
    # "default": GroupNorm on the first conv; "layer_norm": LN after every conv
    extractor_mode: ExtractorMode = "default"
    conv_bias: bool = False
    # transformer
    embed_dim: int = 768
    ffn_dim: int = 3072
    num_layers: int = 12
    attention: AttentionConfig = field(default_factory=lambda: AttentionConfig(num_heads=12))
    layer_attention: list[AttentionConfig] | None = None  # optional per-layer attention (len == num_layers)
    layer_norm_first: bool = False  # pre-LN (large) instead of post-LN (base); Conformer blocks are always pre-LN
    # "transformer" (wav2vec 2.0's layers) or "conformer" (macaron feed-forwards around the attention and a
    # depthwise-convolution module of conformer_kernel frames, normalised by LayerNorm or BatchNorm)
    encoder_block: EncoderBlock = "transformer"
    conformer_kernel: int = 15
    conformer_norm: ConformerNorm = "layer"
    conv_pos: int = 128
    conv_pos_groups: int = 16
    layer_norm_eps: float = 1e-5
    normalize_waveform: bool = False  # inputs are zero-mean unit-variance per utterance (fairseq task.normalize)
    # regularisation
    dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.1
    dropout_features: float = 0.1
    layerdrop: float = 0.05
    feature_grad_mult: float = 0.1
    # quantizer and projections (pretraining)
    final_dim: int = 256
    latent_vars: int = 320
    latent_groups: int = 2
    latent_dim: int = 0  # 0: use final_dim
    latent_temp: list[float] = field(default_factory=lambda: [2.0, 0.5, 0.999995])  # max, min, decay per update
    # pretraining objective: "contrastive" (wav2vec 2.0: InfoNCE over the Gumbel quantizer above) or "bestrq"
    # (BEST-RQ: cross-entropy on the entries a frozen random-projection quantizer picks for the fbank frames)
    objective: Objective = "contrastive"
    bestrq_codebooks: int = 1
    bestrq_entries: int = 8192
    bestrq_dim: int = 16
    bestrq_seed: int = 0  # draws the projection and codebooks (then stored in the checkpoint)
    # masking
    mask_prob: float = 0.65
    mask_length: int = 10
    mask_channel_prob: float = 0.0
    mask_channel_length: int = 10
    # contrastive loss
    num_negatives: int = 100
    logit_temp: float = 0.1
    diversity_weight: float = 0.1
    feature_pen_weight: float = 10.0
    # CTC head (fine-tuning); 0 means no head
    vocab_size: int = 0
    final_dropout: float = 0.0

    @property
    def feature_dim(self) -> int:
        """Channels of the front end's frames: the last conv's, fbank bins x stacked frames, or the subsampling
        convolutions' channels x the frequency bins they leave."""
        if self.frontend == "cnn":
            return self.conv_layers[-1][0]
        if self.fbank_subsampling == "conv":
            return conv_feature_dim(self.fbank_bins, self.fbank_stack, self.fbank_conv_channels)
        return self.fbank_bins * self.fbank_stack

    @property
    def stacked_fbank_dim(self) -> int:
        """Channels of fbank_stack stacked log-mel frames: what BEST-RQ's quantizer reads, whatever the
        subsampling."""
        return self.fbank_bins * self.fbank_stack

    def attention_for(self, layer: int) -> AttentionConfig:
        if self.layer_attention is not None:
            return self.layer_attention[layer]
        return self.attention

    @property
    def has_full_attention(self) -> bool:
        """True when some layer has a full-attention head (quadratic cost: long inputs run in chunks)."""
        return any(self.attention_for(i).full_heads > 0 for i in range(self.num_layers))

    def validate(self) -> None:
        for name in ("embed_dim", "ffn_dim", "num_layers", "conv_pos", "conv_pos_groups", "final_dim", "latent_vars",
                     "latent_groups", "mask_length", "mask_channel_length", "num_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("latent_dim", "vocab_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        for name in ("dropout", "activation_dropout", "dropout_input", "dropout_features", "layerdrop", "mask_prob",
                     "mask_channel_prob", "final_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        self._validate_front_end()
        self._validate_encoder()

    def _validate_front_end(self) -> None:
        if not self.conv_layers or any(len(layer) != 3 or min(layer) < 1 for layer in self.conv_layers):
            raise ValueError(
                f"conv_layers must be a non-empty list of [channels, kernel, stride] with positive values, "
                f"got {self.conv_layers}"[:300]
            )
        for name, allowed in (
            ("frontend", FRONT_ENDS),
            ("encoder_block", ENCODER_BLOCKS),
            ("conformer_norm", CONFORMER_NORMS),
            ("objective", OBJECTIVES),
            ("fbank_subsampling", FBANK_SUBSAMPLINGS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.objective == "bestrq" and self.frontend != "fbank":
            raise ValueError(
                "objective: bestrq quantizes filterbank frames and needs frontend: fbank, got "
                f"frontend: {self.frontend}"
            )
        if self.fbank_freq_masks < 0 or self.fbank_freq_width < 0:
            raise ValueError(
                f"fbank_freq_masks and fbank_freq_width must be 0 or more, got {self.fbank_freq_masks} "
                f"and {self.fbank_freq_width}"
            )
        if self.fbank_freq_masks and self.frontend != "fbank":
            raise ValueError(
                "fbank_freq_masks masks filterbank bins and needs frontend: fbank (the raw CNN's "
                "features are masked by mask_channel_prob)"
            )
        for name in (
            "fbank_bins",
            "fbank_stack",
            "fbank_conv_channels",
            "bestrq_codebooks",
            "bestrq_entries",
            "bestrq_dim",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.frontend == "fbank" and self.fbank_subsampling == "conv":
            if conv_bins(self.fbank_bins, self.fbank_stack) < 1:  # also refuses a stack that is no power of two
                raise ValueError(
                    f"fbank_bins: {self.fbank_bins} bins are too few for fbank_subsampling: conv at "
                    f"fbank_stack {self.fbank_stack}"
                )

    def _validate_encoder(self) -> None:
        if self.conformer_kernel < 1 or self.conformer_kernel % 2 == 0:
            raise ValueError(
                f"conformer_kernel must be odd and positive (a centred convolution), got {self.conformer_kernel}"
            )
        if len(self.latent_temp) != 3:
            raise ValueError(f"latent_temp must be [max, min, decay], got {self.latent_temp}")
        if self.extractor_mode not in ("default", "layer_norm"):
            raise ValueError(f"extractor_mode must be 'default' or 'layer_norm', got {self.extractor_mode!r}")
        if self.layer_attention is not None and len(self.layer_attention) != self.num_layers:
            raise ValueError(
                f"layer_attention has {len(self.layer_attention)} entries for num_layers={self.num_layers}"
            )
        distinct = [(0, self.attention)] if self.layer_attention is None else enumerate(self.layer_attention)
        for i, attention in distinct:  # the shared config once, not num_layers times
            attention.validate()
            if self.embed_dim % attention.num_heads:
                raise ValueError(f"layer {i}: embed_dim {self.embed_dim} not divisible by {attention.num_heads} heads")
            if attention.causal:
                raise ValueError(f"layer {i}: wav2vec2 encoders are bidirectional; attention.causal must be False")
        if self.embed_dim % self.conv_pos_groups:
            raise ValueError(f"embed_dim {self.embed_dim} must be divisible by conv_pos_groups {self.conv_pos_groups}")
        vq_dim = self.latent_dim or self.final_dim
        if vq_dim % self.latent_groups:
            raise ValueError(f"latent dim {vq_dim} must be divisible by latent_groups {self.latent_groups}")

    # ------------------------------------------------------------------ (de)serialisation, values only
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Wav2Vec2Config:
        """Build from plain values (a YAML config); unknown keys and flat attention keys are errors that name
        them."""
        return cls._parse(values, AttentionConfig.from_dict)

    @classmethod
    def from_saved(cls, values: dict) -> Wav2Vec2Config:
        """From a saved model's config.json, also one whose attention was written with flat keys."""
        return cls._parse(values, AttentionConfig.from_saved)

    @classmethod
    def _parse(cls, values: dict, attention_from) -> Wav2Vec2Config:
        check_known_keys(cls, values)
        values = dict(values)
        if isinstance(values.get("attention"), dict):
            values["attention"] = attention_from(values["attention"], "attention")
        if isinstance(values.get("layer_attention"), list):
            values["layer_attention"] = [
                attention_from(a, f"layer_attention[{i}]") if isinstance(a, dict) else a
                for i, a in enumerate(values["layer_attention"])
            ]
        return from_values(cls, values)
