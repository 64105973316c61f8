"""On-the-fly waveform augmentation for CTC training: what the model hears varies, the transcript does not.

Each training utterance draws its own perturbations from a generator seeded by its batch key, so a resumed
run and a run on more ranks hear exactly the same audio. Everything runs on the waveform, before the
model's front end, with torchaudio's DSP (no noise or impulse-response corpora needed):

- **speed** (Kaldi's speed perturbation): resample by a factor drawn from ``speeds``; tempo and pitch change
  together, the duration by 1/factor;
- **noise**: white, pink or brown noise (spectrally shaped Gaussian) at an SNR drawn from ``noise_snr`` dB;
- **reverberation**: a synthetic room impulse response (a direct path, then exponentially decaying noise
  whose RT60 is drawn from ``reverb_rt60`` seconds), convolved and rescaled to the dry level;
- **band limits**: a telephone-like band (high-pass at 300 Hz, low-pass at a cutoff drawn from
  ``bandlimit_hz``), or 8-bit mu-law companding, as cheap stand-ins for channel and codec effects.

SpecAugment on the filterbank is the model's own (``fbank_freq_masks`` and span masking), not done here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

NOISE_COLOURS = ("white", "pink", "brown")


@dataclass
class AugmentConfig:
    speeds: list[float] = field(default_factory=list)  # e.g. [0.9, 1.0, 1.1]; empty: no speed perturbation
    noise_prob: float = 0.0
    noise_snr: list[float] = field(default_factory=lambda: [10.0, 30.0])  # dB, uniform
    reverb_prob: float = 0.0
    reverb_rt60: list[float] = field(default_factory=lambda: [0.2, 0.7])  # seconds, uniform
    bandlimit_prob: float = 0.0  # telephone band, or mu-law companding (half of the time each)
    bandlimit_hz: list[float] = field(default_factory=lambda: [3000.0, 5000.0])  # low-pass cutoff, uniform

    @property
    def enabled(self) -> bool:
        return bool(self.speeds) or self.noise_prob > 0 or self.reverb_prob > 0 or self.bandlimit_prob > 0

    def validate(self) -> None:
        for name in ("noise_prob", "reverb_prob", "bandlimit_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.augment.{name} must be between 0 and 1, got {getattr(self, name)}")
        if any(not 0.5 <= s <= 2.0 for s in self.speeds):
            raise ValueError(f"data.augment.speeds must lie in [0.5, 2.0], got {self.speeds}")
        for name in ("noise_snr", "reverb_rt60", "bandlimit_hz"):
            pair = getattr(self, name)
            if len(pair) != 2 or pair[0] > pair[1]:
                raise ValueError(f"data.augment.{name} must be [low, high], got {pair}")
        if self.reverb_rt60[0] <= 0 or self.bandlimit_hz[0] <= 0:
            raise ValueError("data.augment.reverb_rt60 and bandlimit_hz must be positive")


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _chance(generator: torch.Generator, probability: float) -> bool:
    return probability > 0 and float(torch.rand((), generator=generator)) < probability


def change_speed(wave: torch.Tensor, factor: float, sample_rate: int) -> torch.Tensor:
    """Kaldi-style speed perturbation: the samples played ``factor`` times faster (resampled), (S,) -> (~S/factor,)."""
    import torchaudio.functional as AF

    if factor == 1.0:
        return wave
    # the audio as if recorded at sample_rate * factor, read back at sample_rate
    source = int(round(sample_rate * factor / 100)) * 100
    return AF.resample(wave, source, sample_rate)


def coloured_noise(samples: int, colour: str, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise with a 1/f^0 (white), 1/f (pink) or 1/f^2 (brown) power spectrum, unit RMS: (samples,)."""
    white = torch.randn(samples, generator=generator)
    if colour == "white" or samples < 2:
        noise = white
    else:
        spectrum = torch.fft.rfft(white)  # (samples // 2 + 1,)
        frequency = torch.arange(spectrum.numel(), dtype=torch.float32).clamp(min=1.0)
        exponent = 0.5 if colour == "pink" else 1.0  # amplitude ~ f^-exponent
        noise = torch.fft.irfft(spectrum / frequency.pow(exponent), n=samples)
    return noise / noise.square().mean().sqrt().clamp(min=1e-12)


def add_noise(wave: torch.Tensor, snr_db: float, colour: str, generator: torch.Generator) -> torch.Tensor:
    power = wave.square().mean()
    if float(power) == 0.0:
        return wave
    noise = coloured_noise(wave.numel(), colour, generator)
    return wave + noise * (power / 10 ** (snr_db / 10)).sqrt()


def room_impulse_response(rt60: float, sample_rate: int, generator: torch.Generator) -> torch.Tensor:
    """A synthetic RIR: unit direct path, then Gaussian noise decaying by 60 dB over ``rt60`` seconds (after a
    few milliseconds of pre-delay), ``rt60`` seconds long: (samples,)."""
    length = max(2, int(rt60 * sample_rate))
    t = torch.arange(length, dtype=torch.float32) / sample_rate
    tail = torch.randn(length, generator=generator) * torch.exp(-3 * math.log(10) * t / rt60)  # -60 dB at rt60
    delay = int(0.003 * sample_rate)
    tail[:delay] = 0.0
    response = 0.3 * tail / tail.abs().max().clamp(min=1e-12)
    response[0] = 1.0
    return response


def reverberate(wave: torch.Tensor, rt60: float, sample_rate: int, generator: torch.Generator) -> torch.Tensor:
    import torchaudio.functional as AF

    if wave.numel() == 0:
        return wave
    wet = AF.fftconvolve(wave, room_impulse_response(rt60, sample_rate, generator))[: wave.numel()]
    return wet * (wave.square().mean() / wet.square().mean().clamp(min=1e-20)).sqrt()


def band_limit(wave: torch.Tensor, cutoff_hz: float, sample_rate: int) -> torch.Tensor:
    """A telephone-like channel: high-pass at 300 Hz, low-pass at ``cutoff_hz``."""
    import torchaudio.functional as AF

    cutoff = min(cutoff_hz, 0.45 * sample_rate)
    # torchaudio's biquads clamp their output to [-1, 1]: filter at a quarter of full scale, then scale back
    scale = 0.25 / wave.abs().max().clamp(min=1e-12)
    return AF.lowpass_biquad(AF.highpass_biquad(wave * scale, sample_rate, 300.0), sample_rate, cutoff) / scale


def mu_law(wave: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """8-bit mu-law companding and back (G.711-like quantisation noise), on the waveform's own peak scale."""
    import torchaudio.functional as AF

    peak = wave.abs().max().clamp(min=1e-12)
    coded = AF.mu_law_encoding(wave / peak, channels)
    return AF.mu_law_decoding(coded, channels) * peak


def augment(wave: torch.Tensor, config: AugmentConfig, sample_rate: int, generator: torch.Generator) -> torch.Tensor:
    """One utterance's perturbed waveform (S,) -> (S',), drawn from ``generator`` (same seed, same result)."""
    if config.speeds:
        factor = config.speeds[int(torch.randint(0, len(config.speeds), (), generator=generator))]
        wave = change_speed(wave, factor, sample_rate)
    if _chance(generator, config.reverb_prob):
        wave = reverberate(wave, _uniform(generator, *config.reverb_rt60), sample_rate, generator)
    if _chance(generator, config.noise_prob):
        colour = NOISE_COLOURS[int(torch.randint(0, len(NOISE_COLOURS), (), generator=generator))]
        wave = add_noise(wave, _uniform(generator, *config.noise_snr), colour, generator)
    if _chance(generator, config.bandlimit_prob):
        if _chance(generator, 0.5):
            wave = band_limit(wave, _uniform(generator, *config.bandlimit_hz), sample_rate)
        else:
            wave = mu_law(wave)
    return wave.float()
