"""The conv-subsampled filterbank front end: the convolutions against a written-out reference on torchaudio's
Kaldi fbank, frame counts and receptive field, BEST-RQ targets, SpecAugment before the convolutions, checkpoints,
ONNX and config errors. Padded batches, inputs read in pieces, streaming and time slices are tested for both
filterbank front ends in test_fbank.py."""
import json

import numpy as np
import pytest
import torch
from audio_fixtures import tone_wave
from torchaudio.compliance import kaldi

from seqattn import load_model
from seqattn.models.io import save_model
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPretraining, longform, tiny
from seqattn.models.wav2vec2.conv_fbank import ConvFbankFrontEnd, conv_bins
from seqattn.models.wav2vec2.masking import frequency_mask, generators_for
from seqattn.nn import AttentionConfig
from seqattn.nn.heads import LocalHeads

LOCAL = AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=6, window_right=5))


def _speechlike(seconds, seed=0):
    wave = torch.from_numpy(tone_wave(seconds, 16000, np.random.default_rng(seed))).float()
    wave[len(wave) // 3 : len(wave) // 3 + 1600] = 0.0  # digital silence, as espeak's pauses
    return wave


def _normalised_kaldi_fbank(wave, bins):
    """torchaudio's Kaldi fbank (dither 0), every bin normalised over the utterance: (F, bins)."""
    fbank = kaldi.fbank(wave[None].double(), num_mel_bins=bins, dither=0.0)
    return ((fbank - fbank.mean(0)) / (fbank.var(0, unbiased=False) + 1e-5).sqrt()).float()


def _reference_subsampling(front: ConvFbankFrontEnd, log_mel):
    """The convolutions written out as sums over the 3 x 3 kernel taps: (F, bins) -> (T, C * bins')."""
    x = log_mel[None].double()  # (1 channel, F, bins)
    for conv in front.convs:
        weight, bias = conv.weight.double(), conv.bias.double()  # (C_out, C_in, 3, 3), (C_out,)
        frames, bins = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
        out = bias[:, None, None].expand(-1, frames, bins).clone()
        for i in range(3):
            for j in range(3):
                taps = x[:, i : i + 2 * frames - 1 : 2, j : j + 2 * bins - 1 : 2]  # (C_in, frames, bins)
                out += torch.einsum("oc,ctf->otf", weight[:, :, i, j], taps)
        x = out.clamp(min=0)  # ReLU
    return x.permute(1, 0, 2).reshape(x.shape[1], -1).float()  # (T, C * bins'): channel-major per frame


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_frames_equal_the_written_out_convolutions_on_kaldi_fbank(factor):
    torch.manual_seed(factor)
    front = ConvFbankFrontEnd(40, factor, channels=6)
    wave = _speechlike(1.37, seed=factor)
    ours = front(wave[None])[0].T  # (T, C * bins')
    reference = _reference_subsampling(front, _normalised_kaldi_fbank(wave, 40))
    assert ours.shape == reference.shape == (int(front.output_lengths(torch.tensor([wave.numel()]))[0]),
                                             6 * conv_bins(40, factor))
    torch.testing.assert_close(ours, reference, atol=2e-4, rtol=1e-4)


def test_output_lengths_and_receptive_field_describe_the_frames():
    torch.manual_seed(0)
    for factor in (2, 4, 8):
        front = ConvFbankFrontEnd(16, factor, channels=3)
        field, hop = front.receptive_field()
        assert hop == 160 * factor and field == 400 + (2 * factor - 2) * 160
        for samples in (0, 399, 400, field - 1, field, field + hop - 1, field + hop, 16000 + 7):
            frames = front(torch.randn(1, samples)).shape[-1]
            assert frames == int(front.output_lengths(torch.tensor([samples]))[0]), (factor, samples)
            assert (frames > 0) == (samples >= field)
        # frames [a, b) depend on samples [a * hop, (b - 1) * hop + field) alone (no padding anywhere)
        wave = torch.randn(16000)
        statistics = front.whole_input_statistics(lambda start, stop, wave=wave: wave[start:stop], wave.numel(), 4000)
        whole = front(wave[None])
        a, b = 3, 9
        piece = front.with_statistics(wave[None, a * hop : (b - 1) * hop + field], statistics)
        torch.testing.assert_close(piece, whole[..., a:b], atol=1e-5, rtol=1e-5)


def _conv_config(**overrides):
    values = dict(frontend="fbank", fbank_bins=40, fbank_stack=4, fbank_subsampling="conv", fbank_conv_channels=8,
                  attention=LOCAL, vocab_size=12)
    return tiny(**{**values, **overrides})


def test_a_saved_model_holds_the_convolutions_and_loads_equal(tmp_path):
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(_conv_config()).eval()
    path = save_model(model, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["config"]["fbank_subsampling"] == "conv"
    loaded = load_model(path)
    assert "wav2vec2.feature_extractor.convs.1.weight" in loaded.state_dict()
    assert loaded.wav2vec2.feature_norm.normalized_shape == (8 * conv_bins(40, 4),)
    wave = _speechlike(1.3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave[None])[0], model(wave[None])[0])


def test_bestrq_targets_are_centred_log_mel_stacks_that_the_convolutions_cannot_move():
    torch.manual_seed(0)
    model = Wav2Vec2ForPretraining(_conv_config(objective="bestrq", bestrq_entries=64, bestrq_codebooks=2,
                                                mask_prob=0.4, mask_length=2, vocab_size=0)).train()
    assert model.quantizer.projection.shape[1] == 40 * 4  # stacked log-mel, not the convolutions' channels
    wave = _speechlike(2.03, seed=5)
    features = model.wav2vec2.features(wave[None])
    log_mel = _normalised_kaldi_fbank(wave, 40)  # (F, 40)
    frames = features.x.shape[1]
    expected = log_mel[1 : 1 + 4 * frames].reshape(frames, 160)  # output frame t: 10 ms frames 4t+1 .. 4t+4
    torch.testing.assert_close(features.raw[0], expected, atol=2e-4, rtol=1e-4)
    analysed = longform.inference_features(model.wav2vec2, [wave], keep_raw=True)  # `analyze codebook` reads these
    torch.testing.assert_close(analysed.raw, features.raw, atol=1e-5, rtol=1e-5)
    waves, lengths = torch.stack([wave, wave.flip(0)]), torch.tensor([wave.numel(), 20000])
    out = model.pretraining_loss(waves, lengths, generators_for([1, 2]))
    out.loss.backward()
    assert model.wav2vec2.feature_extractor.convs[0].weight.grad.abs().sum() > 0  # the convolutions learn
    targets = model.quantizer(features.raw).targets
    with torch.no_grad():
        for conv in model.wav2vec2.feature_extractor.convs:
            conv.weight.mul_(-2.0)
    assert torch.equal(model.quantizer(model.wav2vec2.features(wave[None]).raw).targets, targets)


def test_frequency_masks_zero_log_mel_bins_before_the_convolutions_in_training_only():
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(_conv_config(fbank_freq_masks=2, fbank_freq_width=7, mask_prob=0.0)).train()
    seen = []
    model.wav2vec2.feature_extractor.convs[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    waves = torch.stack([_speechlike(1.0, seed=1), _speechlike(1.0, seed=2)])
    model.training_forward(waves, None, mask_generators=generators_for([5, 6]))
    expected = frequency_mask(2, 40, 2, 7, generators_for([5, 6]))  # (B, bins)
    assert expected.any()
    log_mel = seen[-1][:, 0]  # (B, F, bins)
    for row in range(2):
        assert torch.equal((log_mel[row] == 0).all(0), expected[row])  # zero in every frame: the masked bins only
    model.training_forward(waves, None)  # no generators (validation, inference): nothing masked
    assert not (seen[-1][:, 0] == 0).all(1).any()
    features = model.wav2vec2.features(waves, None, generators_for([5, 6]))
    assert not (features.raw == 0).all(1).any()  # BEST-RQ's input stays unmasked


@pytest.mark.parametrize("key, value, message", [
    ("fbank_stack", 3, "fbank_stack must be a power of two"),
    ("fbank_stack", 1, "fbank_stack must be a power of two"),
    ("fbank_bins", 6, "fbank_bins: 6 bins are too few"),
    ("fbank_conv_channels", 0, "fbank_conv_channels must be at least 1"),
    ("fbank_subsampling", "pool", "fbank_subsampling must be one of stack, conv"),
])
def test_settings_are_checked_with_the_key_named(key, value, message):
    with pytest.raises(ValueError, match=message):
        _conv_config(**{key: value}).validate()


@pytest.mark.slow
def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from model_fixtures import ctc_model_dir

    from seqattn.interop.onnx import OnnxCTC, export_onnx

    model_dir = ctc_model_dir(tmp_path / "model", attention=LOCAL, frontend="fbank", fbank_bins=40, fbank_stack=4,
                              fbank_subsampling="conv", fbank_conv_channels=4, num_layers=1)
    report = export_onnx(model_dir, tmp_path / "model.onnx")
    assert report.max_difference < 1e-4
    runtime = OnnxCTC(report.path)
    assert (runtime.min_samples, runtime.hop) == (1360, 640)
    model = load_model(model_dir)
    waves = [torch.randn(n, generator=torch.Generator().manual_seed(n)) for n in (1360, 4321, 27183)]
    for n, got, want in zip((1360, 4321, 27183), runtime.logits(waves), longform.LongFormCTC(model).logits(waves)):
        assert got.shape == want.shape == (runtime.num_frames(n), model.config.vocab_size)
        assert float((got - want).abs().max()) < 1e-4
    with torch.no_grad():
        for conv in model.wav2vec2.feature_extractor.convs:  # the graph holds the trained convolutions
            conv.weight.zero_()
    assert max(float((a - b).abs().max()) for a, b in zip(runtime.logits(waves),
                                                          longform.LongFormCTC(model).logits(waves))) > 1e-3
