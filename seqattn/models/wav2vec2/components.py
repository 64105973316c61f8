"""Building blocks of wav2vec 2.0, each passing ``(x, lengths)`` or ``(x, padding_mask)`` explicitly.

Layouts match fairseq / HF / torchaudio so their weights load one to one:
feature CNN (7 convs, 320x down-sampling), convolutional positional embedding (weight-normed, K=128,
16 groups), and post-LN (base) or pre-LN (large) transformer layers whose attention is any seqattn mix.
"""
from __future__ import annotations

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
        field, hop = 1, 1
        for layer in self.conv_layers:
            field += (layer.kernel - 1) * hop
            hop *= layer.stride
        return field, hop

    @torch.no_grad()
    def forward_long(self, waveform: torch.Tensor, frames_per_chunk: int = 1024) -> torch.Tensor:
        """Inference on one long waveform (S,) -> (1, C, T), equal to ``forward`` but with memory bounded by
        the chunk instead of the whole input (the first layer alone holds 512 x S/5 floats: 24 GB for an hour).
        """
        total = int(self.output_lengths(torch.tensor([waveform.numel()]))[0])
        if total <= 0:
            return self.forward(waveform[None])
        read = lambda start, stop: waveform[start:stop]
        statistics = self.first_layer_statistics(read, waveform.numel(), frames_per_chunk * self.receptive_field()[1])
        return self.forward_frames(read, 0, total, statistics, frames_per_chunk)

    @torch.no_grad()
    def forward_frames(self, read, f0: int, f1: int, statistics, frames_per_chunk: int = 1024) -> torch.Tensor:
        """Output frames [f0, f1) -> (1, C, f1 - f0), computed ``frames_per_chunk`` frames at a time from
        ``read(start, stop)``, which returns waveform samples [start, stop) as a (samples,) tensor.

        The convolutions have no padding, so output frames [a, b) depend only on samples
        [a*hop, (b-1)*hop + field) and each chunk is computed exactly. The base model's GroupNorm on the first
        layer normalises every channel over the *whole* utterance: ``statistics`` (from
        :meth:`first_layer_statistics`, None for a layer-norm extractor) applies those as a fixed affine map.
        """
        field, hop = self.receptive_field()
        pieces = []
        for a in range(f0, f1, frames_per_chunk):
            b = min(f1, a + frames_per_chunk)
            x = read(a * hop, (b - 1) * hop + field)[None, None]  # (1, 1, samples of this chunk)
            for i, layer in enumerate(self.conv_layers):
                if i == 0 and statistics is not None:
                    mean, inv_std = statistics
                    y = (layer.conv(x) - mean) * inv_std  # GroupNorm with whole-utterance statistics
                    x = F.gelu(y * layer.norm.weight[:, None] + layer.norm.bias[:, None])
                else:
                    x = layer(x)
            pieces.append(x)  # (1, C, b - a)
        return torch.cat(pieces, dim=2)

    @torch.no_grad()
    def first_layer_statistics(self, read, num_samples: int, samples_per_chunk: int):
        """Per-channel mean and 1/std of the first conv's output over the whole waveform (``read`` as in
        :meth:`forward_frames`), chunk by chunk in float64; None when the first layer has no GroupNorm."""
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
        mean = total / frames
        variance = (sum_sq / frames - mean.square()).clamp(min=0.0)  # biased, as GroupNorm uses
        inv_std = (variance + layer.norm.eps).rsqrt()
        return mean.float()[:, None], inv_std.float()[:, None]


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
    INFERENCE_SLICE = 8192  # frames per slice for inference on long inputs

    def __init__(self, dim: int, hidden: int, activation_dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). Without autograd, long inputs go through in slices of time so the
        (T, 4C) hidden activations of an hour of audio (2 GB each for the base model) never exist at once."""
        if not torch.is_grad_enabled() and x.shape[0] * x.shape[1] > self.INFERENCE_SLICE:
            step = max(1, self.INFERENCE_SLICE // x.shape[0])
            return torch.cat([self._hidden_and_out(x[:, t : t + step]) for t in range(0, x.shape[1], step)], dim=1)
        return self._hidden_and_out(x)

    def _hidden_and_out(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))


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

    def forward(self, x, padding_mask=None, return_weights: bool = False):
        """x (B, T, C) -> (x, aux_loss, attention weights or [])."""
        residual = x
        if self.layer_norm_first:
            x = self.attention_norm(x)
        attended = self.attention(x, padding_mask, return_weights=return_weights)
        x = residual + self.dropout(attended.out)
        if self.layer_norm_first:
            x = x + self.dropout(self.ffn(self.final_norm(x)))
        else:
            x = self.attention_norm(x)
            x = self.final_norm(x + self.dropout(self.ffn(x)))
        return x, attended.aux_loss, attended.weights


def map_time_slices(x: torch.Tensor, fn, halo: int, slice_frames: int, padding_mask=None) -> torch.Tensor:
    """``fn(x, padding_mask)`` for a length-preserving ``fn`` whose output frame t depends only on input frames
    t - halo .. t + halo, computed on slices of ``slice_frames`` frames (plus the halo each side) so that its
    temporaries are bounded by the slice instead of the sequence. x (B, T, C) -> (B, T, C)."""
    length = x.shape[1]
    if length <= slice_frames + 2 * halo:
        return fn(x, padding_mask)
    out = torch.empty_like(x)
    for start in range(0, length, slice_frames):
        stop = min(length, start + slice_frames)
        lo, hi = max(0, start - halo), min(length, stop + halo)
        mask = None if padding_mask is None else padding_mask[:, lo:hi]
        out[:, start:stop] = fn(x[:, lo:hi], mask)[:, start - lo : stop - lo]
    return out


class Encoder(nn.Module):
    """Positional conv + transformer layers (+ final LN for pre-LN models)."""

    INFERENCE_SLICE = 4096  # frames per time slice for inference on long inputs

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

    def forward(self, x, padding_mask=None, num_layers: int | None = None, return_weights: bool = False,
                keep_layer_outputs: bool = True):
        """x (B, T, C) -> (final output, per-layer outputs, aux loss, per-layer weights).

        Per-layer output i is layer i's output before any final LN (fairseq ``layer_results[i][0]``);
        ``keep_layer_outputs=False`` returns none, so inference holds one layer's activations at a time.
        Padded frames are zeroed before the positional conv so they never leak into real frames.
        """
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        # Inference on long inputs: layers whose every head is local (and the positional conv) run on
        # overlapping time slices, so an hour of audio holds a few (T, C) tensors instead of a dozen.
        sliced = not torch.is_grad_enabled() and not return_weights and x.shape[1] > 2 * self.INFERENCE_SLICE
        if sliced:
            x = x + map_time_slices(x, lambda part, _: self.pos_conv(part), self.pos_conv.kernel // 2,
                                    self.INFERENCE_SLICE)
        else:
            x = x + self.pos_conv(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        outputs, weights = [], []
        aux = x.new_zeros(())
        limit = len(self.layers) if num_layers is None else num_layers
        for layer in self.layers[:limit]:
            if self.training and self.layerdrop > 0 and torch.rand(()) < self.layerdrop:
                continue
            reach = layer.attention.config.reach
            if sliced and reach is not None:
                x = map_time_slices(x, lambda part, mask: layer(part, mask)[0], max(reach), self.INFERENCE_SLICE,
                                    padding_mask)
                layer_aux, layer_weights = aux.new_zeros(()), []
            else:
                x, layer_aux, layer_weights = layer(x, padding_mask, return_weights)
            aux = aux + layer_aux
            if keep_layer_outputs:
                outputs.append(x)
            weights.append(layer_weights)
        if self.layer_norm_first and limit == len(self.layers):
            x = self.layer_norm(x)
        return x, outputs, aux, weights
