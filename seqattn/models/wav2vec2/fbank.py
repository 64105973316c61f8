"""Log-mel filterbank front end: waveform (B, S) -> stacked, normalised fbank frames (B, C, T).

The raw-waveform CNN of wav2vec 2.0 spends most of a small model's compute (about 73 GFLOP per 60 s
against 3 for local attention in the demo model). A filterbank costs almost nothing, has no parameters, and
is what BEST-RQ, w2v-BERT 2.0 and the Conformer recognisers feed their encoders. This module computes it
inside the model, so every seqattn command (pretraining, fine-tuning, transcription, analysis) takes
waveforms whatever the front end.

- **Kaldi's fbank**, batched: 25 ms frames every 10 ms (``snip_edges``: a frame only where 400 samples
  fit), DC offset removed, pre-emphasis 0.97, Povey window, 512-point power spectrum, Kaldi mel banks
  (20 Hz .. Nyquist), ``log(max(energy, float eps))``. Equal to ``torchaudio.compliance.kaldi.fbank`` with
  ``dither=0`` (tested).
- **Per-utterance normalisation**: every bin to zero mean and unit variance over the utterance's frames,
  padding-aware (a batch gives what each utterance gives alone). Like the raw CNN's GroupNorm it needs the
  whole utterance's statistics, so long inputs read in pieces take them from a first pass
  (:meth:`FbankFrontEnd.whole_input_statistics`).
- **Frame stacking**: ``stack`` consecutive 10 ms frames are concatenated into one output frame, so the
  encoder runs at 20, 40 or 80 ms (``stack`` 2, 4, 8). Output frame t covers fbank frames
  ``t*stack .. t*stack + stack - 1``; trailing frames that do not fill a stack are dropped.

Waveform scale does not matter after normalisation (a gain is a constant offset of the log energies), except
where the energy floor clips digital silence.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .front_end import FrontEndFrames

FRAME_SAMPLES = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms at 16 kHz
FFT_SIZE = 512  # the frame zero-padded to a power of two, as Kaldi does
PREEMPHASIS = 0.97
NORM_EPS = 1e-5  # added to the variance before the normalising division

Statistics = tuple[torch.Tensor, torch.Tensor]  # (mean (bins,), 1/std (bins,)) of one utterance's log-mel frames
Read = Callable[[int, int], torch.Tensor]


def fbank_frame_count(num_samples: torch.Tensor | int):
    """10 ms frames Kaldi's ``snip_edges`` framing gives for ``num_samples`` samples (0 when fewer than 400)."""
    if isinstance(num_samples, torch.Tensor):
        return torch.where(num_samples >= FRAME_SAMPLES,
                           torch.div(num_samples - FRAME_SAMPLES, FRAME_SHIFT, rounding_mode="floor") + 1,
                           torch.zeros_like(num_samples))
    return 0 if num_samples < FRAME_SAMPLES else (num_samples - FRAME_SAMPLES) // FRAME_SHIFT + 1


def stack_frames(log_mel: torch.Tensor, stack: int) -> torch.Tensor:
    """(B, F, bins) -> (B, bins * stack, F // stack): ``stack`` consecutive frames side by side; trailing
    frames that do not fill a stack are dropped."""
    batch, frames, bins = log_mel.shape
    steps = frames // stack
    x = log_mel[:, : steps * stack].reshape(batch, steps, stack * bins)  # (B, T, stack * bins)
    return x.transpose(1, 2)  # (B, C, T)


def kaldi_mel_banks(num_bins: int, sample_rate: int) -> torch.Tensor:
    """(FFT_SIZE // 2 + 1, num_bins) triangular mel filters on the power spectrum, Kaldi's (20 Hz .. Nyquist)."""
    from torchaudio.compliance.kaldi import get_mel_banks

    banks, _ = get_mel_banks(num_bins, FFT_SIZE, float(sample_rate), 20.0, 0.0, 100.0, -500.0, 1.0)  # (bins, 256)
    return F.pad(banks, (0, 1)).T.contiguous()  # (257, bins): the Nyquist bin gets no weight, as in Kaldi


class FbankFrontEnd(nn.Module):
    """Waveforms (B, S) -> normalised log-mel frames stacked to ``stack`` x 10 ms, (B, num_bins * stack, T).

    No parameters and no buffers: the window and mel matrix are constants of the config, built on first use
    on each device, so the checkpoint holds nothing for the front end (and a model built on the meta device
    and filled from a checkpoint has nothing left unfilled).
    """

    def __init__(self, num_bins: int = 80, stack: int = 4, sample_rate: int = 16000, normalize: bool = True):
        super().__init__()
        if num_bins < 1 or stack < 1:
            raise ValueError(f"fbank_bins and fbank_stack must be at least 1, got {num_bins} and {stack}")
        self.num_bins, self.stack, self.normalize, self.sample_rate = num_bins, stack, normalize, sample_rate
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(Povey window (400,), mel matrix (257, bins)) in float32 on ``device``."""
        if device not in self._constants:
            window = torch.hann_window(FRAME_SAMPLES, periodic=False, dtype=torch.float64).pow(0.85).float()
            mel = kaldi_mel_banks(self.num_bins, self.sample_rate)
            self._constants[device] = (window.to(device), mel.to(device))
        return self._constants[device]

    def receptive_field(self) -> tuple[int, int]:
        """(samples seen by one output frame, samples between output frames): (880, 640) at 40 ms."""
        return FRAME_SAMPLES + (self.stack - 1) * FRAME_SHIFT, FRAME_SHIFT * self.stack

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(fbank_frame_count(lengths), self.stack, rounding_mode="floor")

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Kaldi log-mel energies of every 10 ms frame: (B, S) -> (B, F, num_bins), F = fbank_frame_count(S)."""
        batch = waveforms.shape[0]
        if waveforms.shape[-1] < FRAME_SAMPLES:
            return waveforms.new_zeros(batch, 0, self.num_bins)
        window, mel = self.constants(waveforms.device)
        frames = waveforms.float().unfold(-1, FRAME_SAMPLES, FRAME_SHIFT)  # (B, F, 400), a view
        frames = frames - frames.mean(-1, keepdim=True)  # DC offset
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # x[max(0, j - 1)]
        frames = (frames - PREEMPHASIS * previous) * window  # (B, F, 400)
        power = torch.fft.rfft(frames, n=FFT_SIZE).abs().pow(2)  # (B, F, 257)
        energies = power @ mel  # (B, F, bins)
        return energies.clamp(min=torch.finfo(torch.float32).eps).log().to(waveforms.dtype)

    @staticmethod
    def statistics_from_sums(total: torch.Tensor, sum_sq: torch.Tensor, count: torch.Tensor) -> Statistics:
        """Mean and 1/std from float64 sums over ``count`` frames (any leading shape, bins last)."""
        count = count.clamp(min=1).to(torch.float64)
        mean = total / count
        variance = (sum_sq / count - mean.square()).clamp(min=0.0)
        return mean.float(), (variance + NORM_EPS).rsqrt().float()

    def normalized(self, log_mel: torch.Tensor, frame_lengths: torch.Tensor | None) -> torch.Tensor:
        """Per-utterance, per-bin normalisation over each row's first ``frame_lengths`` frames (all when None)."""
        batch, frames, _ = log_mel.shape
        values = log_mel.double()
        if frame_lengths is None:
            counts = torch.full((batch,), frames, device=log_mel.device)
        else:
            counts = frame_lengths.clamp(max=frames).to(log_mel.device)
            valid = torch.arange(frames, device=log_mel.device)[None, :] < counts[:, None]  # (B, F)
            values = values * valid[..., None]
        mean, inv_std = self.statistics_from_sums(values.sum(1), values.square().sum(1), counts[:, None])  # (B, bins)
        return (log_mel - mean[:, None].to(log_mel.dtype)) * inv_std[:, None].to(log_mel.dtype)

    def stacked(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, F, bins) -> (B, bins * stack, F // stack): ``stack`` consecutive frames side by side."""
        return stack_frames(log_mel, self.stack)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) waveforms (``lengths`` real samples per row) -> (B, num_bins * stack, T)."""
        log_mel = self.log_mel(waveforms)
        if self.normalize:
            log_mel = self.normalized(log_mel, None if lengths is None else fbank_frame_count(lengths))
        return self.stacked(log_mel)

    # --- the front-end protocol (seqattn.models.wav2vec2.front_end) -------------------------------------------

    masks_before_frames = False  # bins are zeroed in the normalised stacked features (mask_features)

    def training_frames(self, waveforms, lengths=None, bins=None, grad_mult: float = 1.0, training: bool = False):
        """Nothing to learn: no gradient scaling, no feature penalty."""
        x = self(waveforms, lengths)
        return FrontEndFrames(x, x, learned=False)

    def targets_of(self, waveforms: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        return frames

    def mask_features(self, x: torch.Tensor, bins: torch.Tensor | None) -> torch.Tensor:
        """Zero the masked bins (B, bins) bool in every stacked frame of the features x (B, T, stack * bins)."""
        if bins is None:
            return x
        return x.masked_fill(bins.repeat(1, self.stack)[:, None, :], 0.0)  # (B, 1, stack * bins)

    # --- inputs read in pieces (long-form and streamed transcription) ------------------------------------------

    @torch.no_grad()
    def whole_input_statistics(self, read: Read, num_samples: int, samples_per_chunk: int) -> Statistics | None:
        """Normalisation statistics of a whole input read piece by piece (float64 sums), or None when the front
        end does not normalise."""
        if not self.normalize:
            return None
        frames = fbank_frame_count(num_samples)
        per_chunk = max(1, samples_per_chunk // FRAME_SHIFT)
        total = sum_sq = None
        for j0 in range(0, frames, per_chunk):
            j1 = min(frames, j0 + per_chunk)
            part = self.log_mel(read(j0 * FRAME_SHIFT, (j1 - 1) * FRAME_SHIFT + FRAME_SAMPLES)[None])[0].double()
            total = part.sum(0) if total is None else total + part.sum(0)
            sum_sq = part.square().sum(0) if sum_sq is None else sum_sq + part.square().sum(0)
        if total is None:
            return None
        return self.statistics_from_sums(total, sum_sq, torch.tensor(frames))

    def with_statistics(self, samples: torch.Tensor, statistics: Statistics | None) -> torch.Tensor:
        """Output frames of a piece of one input, normalised with the whole input's ``statistics``:
        samples (1, 1, S) or (1, S) -> (1, C, T)."""
        log_mel = self.log_mel(samples.reshape(1, -1))
        if statistics is not None:
            mean, inv_std = statistics
            log_mel = (log_mel - mean.to(log_mel)) * inv_std.to(log_mel)
        return self.stacked(log_mel)
