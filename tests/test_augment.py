"""Waveform augmentation for CTC training: each perturbation checked against what it must do (duration, SNR,
spectrum, decay, band), reproducible per utterance, and wired into fine-tuning batches."""
import math

import numpy as np
import pytest
import torch
from audio_fixtures import tone_wave

from seqattn.data.augment import (
    AugmentConfig,
    add_noise,
    augment,
    band_limit,
    change_speed,
    coloured_noise,
    mu_law,
    reverberate,
    room_impulse_response,
)

RATE = 16000


def _wave(seconds=1.5, seed=0):
    return torch.from_numpy(tone_wave(seconds, RATE, np.random.default_rng(seed))).float()


def _band_power(wave, low, high):
    spectrum = torch.fft.rfft(wave).abs().square()
    freqs = torch.fft.rfftfreq(wave.numel(), 1 / RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_duration_and_pitch_together(factor):
    t = torch.arange(RATE) / RATE
    wave = torch.sin(2 * math.pi * 440 * t)
    fast = change_speed(wave, factor, RATE)
    assert fast.numel() == pytest.approx(RATE / factor, abs=2)
    freqs = torch.fft.rfftfreq(fast.numel(), 1 / RATE)
    peak = float(freqs[torch.fft.rfft(fast).abs().argmax()])
    assert peak == pytest.approx(440 * factor, abs=2)


@pytest.mark.parametrize("colour,slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_noise_has_its_colour_and_the_requested_snr(colour, slope):
    g = torch.Generator().manual_seed(0)
    noise = coloured_noise(RATE * 4, colour, g)
    assert float(noise.square().mean()) == pytest.approx(1.0, rel=1e-4)
    # power spectral slope (dB per decade / 10) between 100 Hz and 4 kHz
    low, high = _band_power(noise, 100, 200) / 100, _band_power(noise, 4000, 8000) / 4000
    measured = math.log10(high / low) / math.log10(6000 / 150)
    assert measured == pytest.approx(slope, abs=0.25)
    wave = _wave()
    noisy = add_noise(wave, 12.0, colour, torch.Generator().manual_seed(1))
    snr = 10 * math.log10(float(wave.square().mean()) / float((noisy - wave).square().mean()))
    assert snr == pytest.approx(12.0, abs=0.01)


def test_reverberation_decays_as_asked_and_keeps_the_level():
    g = torch.Generator().manual_seed(0)
    rir = room_impulse_response(0.5, RATE, g)
    assert rir[0] == 1.0 and rir.numel() == RATE // 2
    energy = rir[1:].square()
    early, late = float(energy[: RATE // 20].mean()), float(energy[-RATE // 20 :].mean())
    assert 10 * math.log10(early / late) > 40  # most of the 60 dB decay happens over the response
    wave = _wave()
    wet = reverberate(wave, 0.5, RATE, torch.Generator().manual_seed(0))
    assert wet.shape == wave.shape
    assert float(wet.square().mean()) == pytest.approx(float(wave.square().mean()), rel=1e-4)
    assert not torch.allclose(wet, wave)


def test_band_limit_and_mu_law():
    g = torch.Generator().manual_seed(0)
    noise = coloured_noise(RATE * 2, "white", g)
    limited = band_limit(noise, 3400.0, RATE)
    assert _band_power(limited, 5000, 8000) < 0.05 * _band_power(noise, 5000, 8000)
    assert _band_power(limited, 1000, 2000) > 0.7 * _band_power(noise, 1000, 2000)
    assert _band_power(limited, 0, 100) < 0.2 * _band_power(noise, 0, 100)
    wave = _wave()
    coded = mu_law(wave)
    error = float((coded - wave).square().mean() / wave.square().mean())
    assert 0 < error < 1e-3  # 8-bit companding: small but present quantisation noise
    assert len(torch.unique(coded)) <= 256


def test_augment_is_reproducible_per_seed_and_a_no_op_when_off():
    config = AugmentConfig(speeds=[0.9, 1.0, 1.1], noise_prob=0.5, reverb_prob=0.5, bandlimit_prob=0.5)
    wave = _wave()
    outs = [augment(wave, config, RATE, torch.Generator().manual_seed(s)) for s in range(12)]
    again = [augment(wave, config, RATE, torch.Generator().manual_seed(s)) for s in range(12)]
    assert all(torch.equal(a, b) for a, b in zip(outs, again))
    assert len({o.numel() for o in outs}) == 3  # every speed drawn
    assert not AugmentConfig().enabled
    assert torch.equal(augment(wave, AugmentConfig(), RATE, torch.Generator().manual_seed(0)), wave)
    with pytest.raises(ValueError, match="data.augment.noise_prob"):
        AugmentConfig(noise_prob=2.0).validate()
    with pytest.raises(ValueError, match="data.augment.speeds"):
        AugmentConfig(speeds=[3.0]).validate()


def test_fine_tuning_batches_hear_the_perturbed_audio(tmp_path):
    from audio_fixtures import make_data_dir

    from seqattn.data.labelled import PaddedBatches, prepare
    from seqattn.data.text import CharVocabulary

    data = make_data_dir(tmp_path, "train", 4, "hi", seconds=(1.0, 1.2), texts=["नमस्ते", "भारत"])
    vocab = CharVocabulary.build(["नमस्ते भारत"])
    items = prepare([(str(data), None)], vocab, RATE, 100, 10**7, lambda n: n // 320).items
    plain = PaddedBatches(items, 0, 0, 10**7, RATE, False)[0]
    config = AugmentConfig(speeds=[0.9, 1.1])
    one = PaddedBatches(items, 0, 0, 10**7, RATE, False, augment=config)[0]
    two = PaddedBatches(items, 0, 0, 10**7, RATE, False, augment=config)[0]
    assert torch.equal(one["waves"], two["waves"])  # the same audio when the epoch is read again (resume)
    assert not torch.equal(one["lengths"], plain["lengths"]) and one["keys"] == plain["keys"]
    assert torch.equal(one["labels"], plain["labels"])  # the transcript does not change
