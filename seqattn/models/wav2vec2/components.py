"""Building blocks of wav2vec 2.0, each passing ``(x, lengths)`` or ``(x, padding_mask)`` explicitly.

Layouts match fairseq / HF / torchaudio so their weights load one to one:
feature CNN (7 convs, 320x down-sampling), convolutional positional embedding (weight-normed, K=128,
16 groups), and post-LN (base) or pre-LN (large) transformer layers whose attention is any seqattn mix.
Conformer blocks (macaron feed-forwards and a convolution module around the same attention) are the
encoder's other option.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from seqattn.nn import AttentionConfig, MultiHeadAttention

from .front_end import FrontEndFrames


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


class _GradMultiply(torch.autograd.Function):
    """Identity forward; scales the gradient (fairseq's feature_grad_mult)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


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

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) -> (B, C, T). ``lengths`` is accepted for the front-end interface and not used: the base
        extractor's GroupNorm normalises over each padded row, as fairseq's does."""
        x = waveforms[:, None]  # (B, 1, S)
        for layer in self.conv_layers:
            x = layer(x)
        return x  # (B, C, T)

    def receptive_field(self) -> tuple[int, int]:
        """(samples seen by one output frame, samples between output frames): (400, 320) for wav2vec 2.0."""
        return receptive_field([(layer.kernel, layer.stride) for layer in self.conv_layers])

    # --- the front-end protocol (seqattn.models.wav2vec2.front_end) -------------------------------------------

    masks_before_frames = False  # no filterbank: no frequency masking

    def training_frames(self, waveforms, lengths=None, bins=None, grad_mult: float = 1.0, training: bool = False):
        """Frames with fairseq's gradient scaling (``feature_grad_mult``; 0 runs the CNN without a graph)."""
        if grad_mult > 0 or not training:
            x = self(waveforms)
            if training and grad_mult != 1.0:
                x = _GradMultiply.apply(x, grad_mult)
        else:
            with torch.no_grad():
                x = self(waveforms)
        return FrontEndFrames(x, x, learned=True)

    def targets_of(self, waveforms: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        return frames

    def mask_features(self, x: torch.Tensor, bins) -> torch.Tensor:
        return x

    # --- inputs read in pieces (long-form and streamed transcription) ------------------------------------------

    @torch.no_grad()
    def whole_input_statistics(self, read, num_samples: int, samples_per_chunk: int):
        """Per-channel mean and 1/std of the first conv's output over the whole waveform, chunk by chunk in
        float64, as ``(mean (C, 1), inv_std (C, 1))``; None when the first layer has no GroupNorm.
        ``read(start, stop)`` returns samples [start, stop)."""
        layer = self.conv_layers[0]
        if layer.norm_kind != "group":
            return None
        frames = (num_samples - layer.kernel) // layer.stride + 1
        per_chunk = max(1, samples_per_chunk // layer.stride)
        total = sum_sq = None
        for j0 in range(0, frames, per_chunk):
            j1 = min(frames, j0 + per_chunk)
            y = layer.conv(read(j0 * layer.stride, (j1 - 1) * layer.stride + layer.kernel)[None, None])[0]
            y = y.double()  # (C, j1 - j0)
            total = y.sum(1) if total is None else total + y.sum(1)
            sum_sq = y.square().sum(1) if sum_sq is None else sum_sq + y.square().sum(1)
        if total is None:
            return None
        mean = total / frames
        variance = (sum_sq / frames - mean.square()).clamp(min=0.0)  # biased, as GroupNorm uses
        inv_std = (variance + layer.norm.eps).rsqrt()
        return mean.float()[:, None], inv_std.float()[:, None]

    def with_statistics(self, samples: torch.Tensor, statistics) -> torch.Tensor:
        """Output frames of a piece of one input, its GroupNorm using the whole input's ``statistics`` (from
        :meth:`whole_input_statistics`) as a fixed affine map: samples (1, 1, S) -> (1, C, T)."""
        x = samples.reshape(1, 1, -1)
        for i, layer in enumerate(self.conv_layers):
            if i == 0 and statistics is not None:
                mean, inv_std = statistics
                y = (layer.conv(x) - mean) * inv_std  # GroupNorm with whole-utterance statistics
                x = F.gelu(y * layer.norm.weight[:, None] + layer.norm.bias[:, None])
            else:
                x = layer(x)
        return x


def receptive_field(kernels_and_strides: list[tuple[int, int]]) -> tuple[int, int]:
    """(samples seen by one output frame, samples between frames) of a stack of convolutions."""
    field, hop = 1, 1
    for kernel, stride in kernels_and_strides:
        field += (kernel - 1) * hop
        hop *= stride
    return field, hop


def conv_output_frames(kernels_and_strides: list[tuple[int, int]], num_samples: int | torch.Tensor):
    """Frames a stack of unpadded convolutions gives for ``num_samples`` inputs (0 when too short); an int, or
    a tensor of counts element by element."""
    frames = num_samples
    for kernel, stride in kernels_and_strides:
        frames = (frames - kernel) // stride + 1
    return frames.clamp(min=0) if isinstance(frames, torch.Tensor) else max(frames, 0)


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
    """Position-wise fc1 -> activation (GELU, or SiLU in Conformer blocks) -> dropout -> fc2:
    x (B, T, C) -> (B, T, C)."""

    def __init__(self, dim: int, hidden: int, activation_dropout: float, activation=F.gelu):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(activation_dropout)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(x))))


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


def attention_reach(attention: MultiHeadAttention) -> int | None:
    """Frames on either side that the attention's output at one frame depends on, or None when unbounded."""
    reach = attention.config.reach
    return None if reach is None else max(reach)


class EncoderLayer(nn.Module):
    """Transformer layer; post-LN (``layer_norm_first=False``, base) or pre-LN (large).

    Every encoder layer (this one and :class:`ConformerLayer`) has two halves that long-form inference runs
    separately: :meth:`attend` (everything up to and including the attention) and :meth:`feed_forward` (the
    rest, whose output frame t depends on input frames within ``feed_forward_reach`` of t).
    """

    feed_forward_reach = 0  # the feed-forward half is position-wise

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

    @property
    def reach(self) -> int | None:
        """Frames on either side that one output frame depends on, or None when unbounded."""
        return attention_reach(self.attention)

    def feed_forward(self, x: torch.Tensor, padding_mask=None) -> torch.Tensor:
        """The feed-forward block with its residual and norm, frame by frame: x (B, T, C) -> (B, T, C)."""
        if self.layer_norm_first:
            return x + self.dropout(self.ffn(self.final_norm(x)))
        return self.final_norm(x + self.dropout(self.ffn(x)))

    def forward(self, x: torch.Tensor, padding_mask=None, return_weights: bool = False) -> LayerOutput:
        """x (B, T, C) -> LayerOutput (x after both blocks)."""
        attended = self.attend(x, padding_mask, return_weights)
        return replace(attended, x=self.feed_forward(attended.x))


class ConvolutionModule(nn.Module):
    """The Conformer's convolution module (Gulati et al. 2020): LN -> pointwise conv to 2C -> GLU -> depthwise
    conv of ``kernel`` frames (centred) -> LayerNorm or BatchNorm -> SiLU -> pointwise conv -> dropout.

    Padded frames are zeroed before the depthwise convolution, so they never reach real frames, and BatchNorm
    takes its training statistics over real frames only (a batch's padding does not shift them). LayerNorm
    (the default) normalises each frame on its own: batch-independent and exact on time slices. Pointwise
    convolutions are linear layers over channels. x (B, T, C) -> (B, T, C).
    """

    def __init__(self, dim: int, kernel: int, norm: str, dropout: float, eps: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.pointwise_in = nn.Linear(dim, 2 * dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.BatchNorm1d(dim) if norm == "batch" else nn.LayerNorm(dim, eps=eps)
        self.pointwise_out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def normalize(self, y: torch.Tensor, padding_mask) -> torch.Tensor:
        if isinstance(self.norm, nn.LayerNorm):
            return self.norm(y)
        if padding_mask is None:
            return self.norm(y.reshape(-1, y.shape[-1])).view_as(y)  # (B*T, C) through BatchNorm1d
        out = torch.zeros_like(y)
        out[~padding_mask] = self.norm(y[~padding_mask])  # (real frames, C)
        return out

    def forward(self, x: torch.Tensor, padding_mask=None) -> torch.Tensor:
        y = F.glu(self.pointwise_in(self.layer_norm(x)), dim=-1)  # (B, T, C): first half gated by the second
        if padding_mask is not None:
            y = y.masked_fill(padding_mask[..., None], 0.0)
        y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)  # (B, T, C)
        return self.dropout(self.pointwise_out(F.silu(self.normalize(y, padding_mask))))


class ConformerLayer(nn.Module):
    """Conformer block: half-step feed-forward, self-attention (any seqattn head mix), convolution module,
    half-step feed-forward, final LayerNorm; every sub-block pre-normed with a residual.

    Same interface as :class:`EncoderLayer`: :meth:`attend` is the first feed-forward and the attention,
    :meth:`feed_forward` the convolution module, the second feed-forward and the final norm.
    """

    def __init__(self, dim: int, ffn_dim: int, attention: AttentionConfig, kernel: int, norm: str, dropout: float,
                 activation_dropout: float, eps: float):
        super().__init__()
        self.ffn1_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn1 = FeedForward(dim, ffn_dim, activation_dropout, F.silu)
        self.attention_norm = nn.LayerNorm(dim, eps=eps)
        self.attention = MultiHeadAttention(dim, attention)
        self.conv = ConvolutionModule(dim, kernel, norm, dropout, eps)
        self.ffn2_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn2 = FeedForward(dim, ffn_dim, activation_dropout, F.silu)
        self.final_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.feed_forward_reach = kernel // 2

    @property
    def reach(self) -> int | None:
        reach = attention_reach(self.attention)
        return None if reach is None else reach + self.feed_forward_reach

    def attend(self, x: torch.Tensor, padding_mask=None, return_weights: bool = False) -> LayerOutput:
        """x (B, T, C) -> LayerOutput after the first half-step feed-forward and the attention."""
        x = x + 0.5 * self.dropout(self.ffn1(self.ffn1_norm(x)))
        attended = self.attention(self.attention_norm(x), padding_mask, return_weights=return_weights)
        return LayerOutput(x + self.dropout(attended.out), attended.aux_loss, attended.weights)

    def feed_forward(self, x: torch.Tensor, padding_mask=None) -> torch.Tensor:
        """Convolution module, second half-step feed-forward, final norm: x (B, T, C) -> (B, T, C)."""
        x = x + self.conv(x, padding_mask)
        x = x + 0.5 * self.dropout(self.ffn2(self.ffn2_norm(x)))
        return self.final_norm(x)

    def forward(self, x: torch.Tensor, padding_mask=None, return_weights: bool = False) -> LayerOutput:
        attended = self.attend(x, padding_mask, return_weights)
        return replace(attended, x=self.feed_forward(attended.x, padding_mask))


def build_layer(config, index: int) -> EncoderLayer | ConformerLayer:
    """Layer ``index`` of the encoder the config describes."""
    if config.encoder_block == "conformer":
        return ConformerLayer(config.embed_dim, config.ffn_dim, config.attention_for(index), config.conformer_kernel,
                              config.conformer_norm, config.dropout, config.activation_dropout, config.layer_norm_eps)
    return EncoderLayer(config.embed_dim, config.ffn_dim, config.attention_for(index), config.layer_norm_first,
                        config.dropout, config.activation_dropout, config.layer_norm_eps)


class Encoder(nn.Module):
    """Positional conv + transformer layers (+ final LN for pre-LN models)."""

    def __init__(self, config):
        super().__init__()
        self.layer_norm_first = config.layer_norm_first
        self.layerdrop = config.layerdrop
        self.pos_conv = ConvPositionalEmbedding(config.embed_dim, config.conv_pos, config.conv_pos_groups)
        self.layer_norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(build_layer(config, i) for i in range(config.num_layers))
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
