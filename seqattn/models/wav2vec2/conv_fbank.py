"""Conv-subsampled filterbank front end: waveform (B, S) -> log-mel at 10 ms -> strided 2-D convolutions.

The other way to bring 10 ms filterbank frames down to the encoder's rate, beside stacking them
(:class:`~seqattn.models.wav2vec2.fbank.FbankFrontEnd`): what the Conformer recognisers of ESPnet, icefall and
NeMo put in front of their encoders. Each of ``log2(factor)`` layers is a 3 x 3 convolution over (time,
frequency) with stride 2 in both, followed by ReLU; the last layer's channels and remaining frequency bins are
flattened into one feature vector per frame. Unlike stacking, it learns: it can smooth, shift and combine
neighbouring bins and frames before the encoder sees them, for about ``9 * channels**2`` multiply-adds per
output position.

- **No padding**, in time or in frequency. Output frame t reads 10 ms frames ``t*factor .. t*factor +
  2*factor - 2`` (a field of ``2*factor - 1`` frames): it depends on a fixed stretch of samples, so inputs read
  in pieces (long-form and streamed transcription) give exactly the frames of one pass, and in a padded batch
  every valid frame sees only its own utterance.
- **Normalisation** before the convolutions, per utterance and padding-aware, exactly as for stacking; long
  inputs read in pieces take the statistics from a first pass (:meth:`whole_input_statistics`).
- **SpecAugment** frequency masks, when training asks for them, zero bins of the normalised log-mel before the
  convolutions (the stacking front end masks its stacked frames after the feature norm instead).
- **BEST-RQ targets** must not be learned features: :meth:`target_frames` gives, for each output frame, the
  ``factor`` normalised 10 ms frames at the centre of its field, stacked as the stacking front end stacks them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .components import conv_output_frames, receptive_field
from .fbank import FRAME_SAMPLES, FRAME_SHIFT, FbankFrontEnd, Read, Statistics, fbank_frame_count, stack_frames
from .front_end import FrontEndFrames

KERNEL = 3
STRIDE = 2


def halvings(factor: int) -> int:
    """How many stride-2 layers reduce 10 ms frames by ``factor`` (2, 4, 8 -> 1, 2, 3)."""
    layers = round(math.log2(factor)) if factor >= 2 else 0
    if factor < 2 or 2**layers != factor:
        raise ValueError(f"fbank_stack must be a power of two (2, 4, 8) for fbank_subsampling: conv, got {factor}")
    return layers


def layer_shapes(factor: int) -> list[tuple[int, int]]:
    """(kernel, stride) of each convolution, the same along time and frequency."""
    return [(KERNEL, STRIDE)] * halvings(factor)


def conv_bins(num_bins: int, factor: int) -> int:
    """Frequency bins left after the convolutions (80 -> 39 -> 19 -> 9)."""
    return conv_output_frames(layer_shapes(factor), num_bins)


def conv_feature_dim(num_bins: int, factor: int, channels: int) -> int:
    """Channels of the front end's output frames: the last layer's channels x its frequency bins."""
    return channels * conv_bins(num_bins, factor)


class ConvFbankFrontEnd(nn.Module):
    """Waveforms (B, S) -> normalised log-mel -> ``log2(factor)`` strided 3 x 3 convolutions with ReLU ->
    (B, channels * bins', T): frames of ``factor`` x 10 ms."""

    def __init__(self, num_bins: int = 80, factor: int = 4, channels: int = 128, sample_rate: int = 16000):
        super().__init__()
        if channels < 1:
            raise ValueError(f"fbank_conv_channels must be at least 1, got {channels}")
        layers = halvings(factor)
        if conv_bins(num_bins, factor) < 1:
            raise ValueError(f"fbank_bins={num_bins} is too few for {layers} convolutions of {KERNEL} bins, stride "
                             f"{STRIDE}; use at least {2**(layers + 1) - 1} bins")
        self.factor, self.channels, self.num_bins = factor, channels, num_bins
        self.field_frames = receptive_field(layer_shapes(factor))[0]  # 10 ms frames one output frame reads
        self.fbank = FbankFrontEnd(num_bins, stack=1, sample_rate=sample_rate)  # 10 ms frames, normalised
        self.convs = nn.ModuleList(
            nn.Conv2d(1 if i == 0 else channels, channels, KERNEL, stride=STRIDE) for i in range(layers)
        )

    @property
    def output_dim(self) -> int:
        return conv_feature_dim(self.num_bins, self.factor, self.channels)

    def receptive_field(self) -> tuple[int, int]:
        """(samples seen by one output frame, samples between output frames): (1360, 640) at 40 ms."""
        return FRAME_SAMPLES + (self.field_frames - 1) * FRAME_SHIFT, FRAME_SHIFT * self.factor

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_frames(layer_shapes(self.factor), fbank_frame_count(lengths))

    def subsample(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, F, bins) normalised log-mel -> (B, channels * bins', T) through the convolutions."""
        x = log_mel[:, None]  # (B, 1, F, bins): time and frequency are the image's two axes
        if x.shape[2] < self.field_frames:  # too short for one output frame
            return x.new_zeros(x.shape[0], self.output_dim, 0)
        for conv in self.convs:
            x = F.relu(conv(x))  # (B, C, F', bins')
        batch, channels, frames, bins = x.shape
        x = x.permute(0, 2, 1, 3).reshape(batch, frames, channels * bins)  # (B, T, C * bins')
        return x.transpose(1, 2)  # (B, C * bins', T)

    def normalized_log_mel(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) -> normalised 10 ms log-mel frames (B, F, bins), each row over its own ``lengths``."""
        return self.fbank(waveforms, lengths).transpose(1, 2)  # (B, F, bins)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None,
                frequency_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) waveforms -> (B, channels * bins', T). ``frequency_mask`` (B, bins) bool zeroes those bins of
        the normalised log-mel first (SpecAugment in training)."""
        return self.subsample(masked_bins(self.normalized_log_mel(waveforms, lengths), frequency_mask))

    def frames_and_targets(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None,
                           frequency_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(output frames (B, C, T), BEST-RQ input frames (B, bins * factor, T)) from one log-mel computation;
        the targets come from the unmasked log-mel."""
        log_mel = self.normalized_log_mel(waveforms, lengths)
        frames = self.subsample(masked_bins(log_mel, frequency_mask))
        return frames, self.centred_stacks(log_mel, frames.shape[-1])

    def centred_stacks(self, log_mel: torch.Tensor, num_frames: int) -> torch.Tensor:
        """For each of ``num_frames`` output frames, the ``factor`` 10 ms frames at the centre of its field,
        side by side: (B, F, bins) -> (B, bins * factor, num_frames). Frame t's field is 10 ms frames
        ``t*factor .. t*factor + 2*factor - 2``; its centre stack starts ``(factor - 1) // 2`` frames in."""
        start = (self.factor - 1) // 2
        return stack_frames(log_mel[:, start : start + num_frames * self.factor], self.factor)

    def target_frames(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """BEST-RQ's input frames alone (B, bins * factor, T), aligned with :meth:`forward`'s frames."""
        log_mel = self.normalized_log_mel(waveforms, lengths)
        num_frames = conv_output_frames(layer_shapes(self.factor), log_mel.shape[1])
        return self.centred_stacks(log_mel, num_frames)

    # --- the front-end protocol (seqattn.models.wav2vec2.front_end) -------------------------------------------

    masks_before_frames = True  # the convolutions mix bins: the log-mel is masked before them

    def training_frames(self, waveforms, lengths=None, bins=None, grad_mult: float = 1.0, training: bool = False):
        """Learned, but (as in the stacked front end) no gradient scaling or feature penalty; BEST-RQ's targets
        come from the unmasked log-mel."""
        frames, targets = self.frames_and_targets(waveforms, lengths, bins)
        return FrontEndFrames(frames, targets, learned=False)

    def targets_of(self, waveforms: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        return self.target_frames(waveforms)

    def mask_features(self, x: torch.Tensor, bins) -> torch.Tensor:
        return x  # masked before the convolutions already

    # --- inputs read in pieces (long-form and streamed transcription) ------------------------------------------

    @torch.no_grad()
    def whole_input_statistics(self, read: Read, num_samples: int, samples_per_chunk: int) -> Statistics | None:
        """Normalisation statistics of a whole input read piece by piece (see :class:`FbankFrontEnd`)."""
        return self.fbank.whole_input_statistics(read, num_samples, samples_per_chunk)

    def with_statistics(self, samples: torch.Tensor, statistics: Statistics | None) -> torch.Tensor:
        """Output frames of a piece of one input, normalised with the whole input's ``statistics``:
        samples (1, 1, S) or (1, S) -> (1, C, T). Exact, as the convolutions have no padding."""
        log_mel = self.fbank.with_statistics(samples, statistics).transpose(1, 2)  # (1, F, bins)
        return self.subsample(log_mel)


def masked_bins(log_mel: torch.Tensor, frequency_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the masked bins of every frame: (B, F, bins) with (B, bins) bool or None."""
    if frequency_mask is None:
        return log_mel
    return log_mel.masked_fill(frequency_mask[:, None, :].to(log_mel.device), 0.0)
