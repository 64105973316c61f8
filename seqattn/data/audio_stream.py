"""Random access to a long audio file at the model's sample rate without holding it in memory.

``load_audio`` decodes a whole file: 230 MB per hour at 16 kHz before any model runs. For hours-long inputs
:class:`StreamingAudio` reads only the samples asked for: it seeks in the file, mixes the channels to mono and
resamples a block with enough margin that the result equals resampling the whole file (torchaudio's sinc
resampler works in periods of ``orig / gcd`` input samples; a block that starts on a period and carries the
filter's width on each side gives the same output samples, to float rounding).

Only plain files can be streamed: a Kaldi pipe's output must be read whole (``load_audio``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from .audio import DECODE_ERRORS, AudioError, AudioSource, check_file, check_wav_length, segment_frames

# torchaudio.functional.resample's defaults, which both paths use
_LOWPASS_FILTER_WIDTH, _ROLLOFF = 6, 0.99


@dataclass
class WaveStatistics:
    """Whole-recording statistics from one streamed pass (float64 sums)."""

    mean: float
    variance: float
    peak: float  # largest absolute sample


class StreamingAudio:
    """A plain audio file (or a segment of it) seen as ``num_samples`` mono float32 samples at ``sample_rate``.

    Opening checks what ``load_audio`` checks (missing file, directory, sample rate, segment bounds, truncated
    WAV); non-finite samples are found by :meth:`statistics` or by the read that meets them, and the error
    names the file and the time.
    """

    def __init__(self, source: AudioSource, sample_rate: int = 16000, block_seconds: float = 60.0):
        if source.is_pipe:
            raise AudioError(f"{source}: pipe sources cannot be streamed; they are read whole")
        check_file(source)
        try:
            self._file = sf.SoundFile(source.location)
            self.native_start, self.native_stop = segment_frames(source, self._file)
            check_wav_length(source)
        except AudioError:
            self.close()
            raise
        except DECODE_ERRORS as error:
            self.close()
            raise AudioError(f"{source}: cannot decode audio ({error})") from None
        self.source = source
        self.sample_rate = sample_rate
        self.native_rate = self._file.samplerate
        native = self.native_stop - self.native_start
        divisor = math.gcd(self.native_rate, sample_rate)
        self._period_in, self._period_out = self.native_rate // divisor, sample_rate // divisor  # resampling period
        width = math.ceil(_LOWPASS_FILTER_WIDTH * self._period_in / (min(self._period_in, self._period_out) * _ROLLOFF))
        self._margin = (width // self._period_in + 2) * self._period_in  # native samples, a whole number of periods
        self.num_samples = math.ceil(self._period_out * native / self._period_in)  # = resample(whole).numel()
        self.block_samples = max(1, int(block_seconds * sample_rate))

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> StreamingAudio:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _native(self, start: int, stop: int) -> np.ndarray:
        """Mono float32 native-rate samples [start, stop) of the segment; non-finite samples are an error."""
        try:
            self._file.seek(self.native_start + start)
            data = self._file.read(stop - start, dtype="float32", always_2d=True)  # (frames, channels)
        except DECODE_ERRORS as error:
            raise AudioError(
                f"{self.source}: cannot decode audio at {start / self.native_rate:.2f} s ({error})"
            ) from None
        if data.shape[0] < stop - start:
            raise AudioError(
                f"{self.source}: truncated: the header promises {self.native_stop - self.native_start} "
                f"frames, reading stopped at {start + data.shape[0]}"
            )
        mono = data.mean(axis=1)
        if not np.isfinite(mono).all():
            at = (start + int(np.flatnonzero(~np.isfinite(mono))[0])) / self.native_rate
            raise AudioError(f"{self.source}: contains NaN or infinite samples (first at {at:.2f} s)")
        return mono

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Samples [start, stop) at ``sample_rate`` as a float32 tensor (clipped to the recording)."""
        start, stop = max(0, start), min(self.num_samples, stop)
        if stop <= start:
            return torch.zeros(0)
        if self._period_in == self._period_out:
            return torch.from_numpy(self._native(start, stop))
        import torchaudio.functional as AF

        native = self.native_stop - self.native_start
        first_period, last_period = start // self._period_out, -(-stop // self._period_out)
        lo = max(0, first_period * self._period_in - self._margin)  # on a period boundary
        hi = min(native, last_period * self._period_in + self._margin)
        block = AF.resample(torch.from_numpy(self._native(lo, hi)), self.native_rate, self.sample_rate)
        offset = lo // self._period_in * self._period_out  # output index of the block's first sample
        return block[start - offset : stop - offset].contiguous()

    def blocks(self):
        """(start, samples) over the whole recording in blocks of ``block_samples``."""
        for start in range(0, self.num_samples, self.block_samples):
            yield start, self.read(start, start + self.block_samples)

    def statistics(self) -> WaveStatistics:
        """Mean, variance and peak over the whole recording, one block at a time."""
        total = total_sq = peak = 0.0
        for _, block in self.blocks():
            values = block.double()
            total += float(values.sum())
            total_sq += float(values.square().sum())
            peak = max(peak, float(values.abs().max()))
        count = max(1, self.num_samples)
        mean = total / count
        return WaveStatistics(mean, max(0.0, total_sq / count - mean * mean), peak)
