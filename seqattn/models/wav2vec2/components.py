"""Building blocks of wav2vec 2.0, each passing ``(x, lengths)`` or ``(x, padding_mask)`` explicitly.

Layouts match fairseq / HF / torchaudio so their weights load one to one:
feature CNN (7 convs, 320x down-sampling), convolutional positional embedding (weight-normed, K=128,
16 groups), and post-LN (base) or pre-LN (large) transformer layers whose attention is any seqattn mix.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from seqattn.nn import AttentionConfig, MultiHeadAttention


class ConvLayer(nn.Module):
    """Conv1d -> optional norm -> GELU. ``norm`` is "group" (per-channel GroupNorm), "layer" or None."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, bias: bool, norm: str | None):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        nn.init.kaiming_normal_(self.conv.weight)  # fairseq/HF init: keeps the activation scale through 7 convs
        self.norm_kind = norm
        if norm == "group":
            self.norm = nn.GroupNorm(out_channels, out_channels, affine=True)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_channels)
        else:
            self.norm = None

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths - self.kernel, self.stride, rounding_mode="floor") + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, S) -> (B, C_out, S')."""
        x = self.conv(x)
        if self.norm_kind == "group":
            x = self.norm(x)
        elif self.norm_kind == "layer":
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)  # LN over channels
        return F.gelu(x)


class FeatureExtractor(nn.Module):
    """Waveform (B, S) -> CNN features (B, C, T) and frame lengths."""

    def __init__(self, conv_layers: list, mode: str, bias: bool):
        super().__init__()
        layers, in_channels = [], 1
        for i, (channels, kernel, stride) in enumerate(conv_layers):
            norm = ("group" if i == 0 else None) if mode == "default" else "layer"
            layers.append(ConvLayer(in_channels, channels, kernel, stride, bias, norm))
            in_channels = channels
        self.conv_layers = nn.ModuleList(layers)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for layer in self.conv_layers:
            lengths = layer.output_lengths(lengths)
        return lengths.clamp(min=0)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = waveforms[:, None]  # (B, 1, S)
        for layer in self.conv_layers:
            x = layer(x)
        return x  # (B, C, T)

    def receptive_field(self) -> tuple[int, int]:
        """(samples seen by one output frame, samples between output frames): (400, 320) for wav2vec 2.0."""
        return receptive_field([(layer.kernel, layer.stride) for layer in self.conv_layers])


def receptive_field(kernels_and_strides: list[tuple[int, int]]) -> tuple[int, int]:
    """(samples seen by one output frame, samples between frames) of a stack of convolutions."""
    field, hop = 1, 1
    for kernel, stride in kernels_and_strides:
        field += (kernel - 1) * hop
        hop *= stride
    return field, hop


def conv_output_frames(kernels_and_strides: list[tuple[int, int]], num_samples: int) -> int:
    """Frames a stack of unpadded convolutions gives for ``num_samples`` inputs (0 when too short)."""
    frames = num_samples
    for kernel, stride in kernels_and_strides:
        frames = (frames - kernel) // stride + 1
    return max(frames, 0)


class ConvPositionalEmbedding(nn.Module):
    """Grouped conv over time with weight norm (``weight = g * v / ||v||``, norm over dims 0 and 1).

    The weight is stored as ``weight_g`` (1, 1, K) and ``weight_v`` (C, C/groups, K), fairseq's layout.
    An even kernel drops the last output frame so the output keeps the input length.
    """

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.kernel, self.groups = kernel, groups
        weight = torch.empty(dim, dim // groups, kernel)
        std = (4.0 / (kernel * dim)) ** 0.5  # fairseq's init for this layer
        nn.init.normal_(weight, mean=0.0, std=std)
        self.weight_v = nn.Parameter(weight)
        self.weight_g = nn.Parameter(weight.norm(dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C)."""
        weight = self.weight_g * self.weight_v / self.weight_v.norm(dim=(0, 1), keepdim=True)
        y = F.conv1d(x.transpose(1, 2), weight, self.bias, padding=self.kernel // 2, groups=self.groups)  # (B, C, T')
        if self.kernel % 2 == 0:
            y = y[:, :, :-1]
        return F.gelu(y).transpose(1, 2)  # (B, T, C)


class FeedForward(nn.Module):
    """Position-wise fc1 -> GELU -> dropout -> fc2: x (B, T, C) -> (B, T, C)."""

    def __init__(self, dim: int, hidden: int, activation_dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))


@dataclass
class LayerOutput:
    """What one transformer layer (or its attention block alone) returns."""

    x: torch.Tensor  # (B, T, C)
    aux_loss: torch.Tensor  # the attention's auxiliary loss (routing commitment), a scalar
    weights: list  # the attention's per-head weights when asked for, else []


@dataclass
class EncoderOutput:
    """The encoder's result; :meth:`Wav2Vec2Model.encode` also fills ``lengths`` and ``time_mask``."""

    x: torch.Tensor  # (B, T, C) final output (after the final LN of pre-LN models)
    layer_outputs: list[torch.Tensor]  # per layer (B, T, C) before any final LN (fairseq layer_results[i][0]),
    # empty with keep_layer_outputs=False
    aux_loss: torch.Tensor  # summed attention auxiliary losses, a scalar
    weights: list  # per layer: the attention weights when asked for, else []
    lengths: torch.Tensor | None = None  # (B,) valid frames; None when no input lengths were given
    time_mask: torch.Tensor | None = None  # (B, T) frames replaced by the mask embedding (training masking)


class EncoderLayer(nn.Module):
    """Transformer layer; post-LN (``layer_norm_first=False``, base) or pre-LN (large)."""

    def __init__(self, dim: int, ffn_dim: int, attention: AttentionConfig, layer_norm_first: bool,
                 dropout: float, activation_dropout: float, eps: float):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.attention = MultiHeadAttention(dim, attention)
        self.attention_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn = FeedForward(dim, ffn_dim, activation_dropout)
        self.final_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def attend(self, x: torch.Tensor, padding_mask=None, return_weights: bool = False) -> LayerOutput:
        """The attention block with its residual and norm: x (B, T, C) -> LayerOutput."""
        residual = x
        if self.layer_norm_first:
            x = self.attention_norm(x)
        attended = self.attention(x, padding_mask, return_weights=return_weights)
        x = residual + self.dropout(attended.out)
        if not self.layer_norm_first:
            x = self.attention_norm(x)
        return LayerOutput(x, attended.aux_loss, attended.weights)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward block with its residual and norm, frame by frame: x (B, T, C) -> (B, T, C)."""
        if self.layer_norm_first:
            return x + self.dropout(self.ffn(self.final_norm(x)))
        return self.final_norm(x + self.dropout(self.ffn(x)))

    def forward(self, x: torch.Tensor, padding_mask=None, return_weights: bool = False) -> LayerOutput:
        """x (B, T, C) -> LayerOutput (x after both blocks)."""
        attended = self.attend(x, padding_mask, return_weights)
        return replace(attended, x=self.feed_forward(attended.x))


class Encoder(nn.Module):
    """Positional conv + transformer layers (+ final LN for pre-LN models)."""

    def __init__(self, config):
        super().__init__()
        self.layer_norm_first = config.layer_norm_first
        self.layerdrop = config.layerdrop
        self.pos_conv = ConvPositionalEmbedding(config.embed_dim, config.conv_pos, config.conv_pos_groups)
        self.layer_norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(
                config.embed_dim, config.ffn_dim, config.attention_for(i), config.layer_norm_first, config.dropout,
                config.activation_dropout, config.layer_norm_eps,
            )
            for i in range(config.num_layers)
        )
        for module in self.layers.modules():  # BERT-style init of the transformer (fairseq init_bert_params)
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def embed(self, x: torch.Tensor, padding_mask=None, positions=None) -> torch.Tensor:
        """The layers' input: padded frames zeroed (so they never leak into real frames through the positional
        conv), conv positions added (``positions(x)`` computes them, ``pos_conv`` by default), the input LN of
        post-LN models and dropout. x (B, T, C) -> (B, T, C)."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        x = x + (self.pos_conv if positions is None else positions)(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        return self.dropout(x)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """After the last layer: the final LN of pre-LN models."""
        return self.layer_norm(x) if self.layer_norm_first else x

    def forward(self, x, padding_mask=None, num_layers: int | None = None, return_weights: bool = False,
                keep_layer_outputs: bool = True) -> EncoderOutput:
        """x (B, T, C) -> EncoderOutput. ``num_layers`` stops early (no final LN then); ``keep_layer_outputs=False``
        keeps no per-layer outputs, so only one layer's activations are alive at a time."""
        x = self.embed(x, padding_mask)
        outputs, weights = [], []
        aux = x.new_zeros(())
        limit = len(self.layers) if num_layers is None else num_layers
        for layer in self.layers[:limit]:
            if self.training and self.layerdrop > 0 and torch.rand(()) < self.layerdrop:
                continue
            result = layer(x, padding_mask, return_weights)
            x, aux = result.x, aux + result.aux_loss
            if keep_layer_outputs:
                outputs.append(x)
            weights.append(result.weights)
        if limit == len(self.layers):
            x = self.finish(x)
        return EncoderOutput(x, outputs, aux, weights)
