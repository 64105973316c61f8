"""The log-mel filterbank front end: Kaldi's fbank (torchaudio.compliance.kaldi as the reference), per-utterance
normalisation, frame stacking, padding, inputs read in pieces, and whole models built on it (checkpoints,
transcription in one pass, in a batch and streamed, inputs too short for one window, config errors)."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import tone_wave
from torchaudio.compliance import kaldi

from seqattn import load_model
from seqattn.cli.main import main as cli_main
from seqattn.data.text import CharVocabulary
from seqattn.models.io import save_model
from seqattn.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForCTC, longform, tiny
from seqattn.models.wav2vec2.conv_fbank import ConvFbankFrontEnd
from seqattn.models.wav2vec2.fbank import FbankFrontEnd, fbank_frame_count
from seqattn.nn import AttentionConfig
from seqattn.nn.heads import LocalHeads

LOCAL = AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=6, window_right=5))


def _speechlike(seconds, seed=0, silence=None):
    """A tone mixture with a stretch of digital silence (espeak's pauses are exact zeros)."""
    wave = torch.from_numpy(tone_wave(seconds, 16000, np.random.default_rng(seed))).float()
    if silence is not None:
        wave[int(silence[0] * 16000) : int(silence[1] * 16000)] = 0.0
    return wave


def _reference(wave, bins=80, stack=1, normalize=True):
    """torchaudio's Kaldi fbank, normalised per bin over the utterance and stacked, written out directly."""
    fbank = kaldi.fbank(wave[None].double(), num_mel_bins=bins, dither=0.0).float()  # (F, bins)
    if normalize:
        mean = fbank.double().mean(0)
        var = fbank.double().var(0, unbiased=False)
        fbank = ((fbank.double() - mean) / (var + 1e-5).sqrt()).float()
    steps = fbank.shape[0] // stack
    return fbank[: steps * stack].reshape(steps, stack * bins)  # (T, stack * bins)


@pytest.mark.parametrize("samples", [400, 401, 559, 560, 16000 * 2 + 123])
@pytest.mark.parametrize("bins", [80, 40])
def test_log_mel_equals_kaldi_fbank(samples, bins):
    wave = _speechlike(samples / 16000 + 0.01, seed=samples)[:samples]
    wave[100:300] = 0.0  # a stretch of digital silence hits the energy floor
    front = FbankFrontEnd(bins, 1, normalize=False)
    reference = kaldi.fbank(wave[None], num_mel_bins=bins, dither=0.0)  # (F, bins)
    ours = front.log_mel(wave[None])[0]
    assert ours.shape == reference.shape == (fbank_frame_count(samples), bins)
    torch.testing.assert_close(ours, reference, atol=3e-4, rtol=1e-5)


@pytest.mark.parametrize("stack", [1, 2, 4, 8])
def test_normalised_stacked_frames_equal_the_reference(stack):
    wave = _speechlike(2.37, seed=stack, silence=(0.5, 0.8))
    ours = FbankFrontEnd(80, stack)(wave[None])[0].T  # (T, 80 * stack)
    reference = _reference(wave, 80, stack)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, atol=2e-4, rtol=1e-4)
    assert float(ours.mean()) == pytest.approx(0.0, abs=0.05)  # normalised frames, not raw log energies


def test_output_lengths_and_receptive_field_describe_the_frames():
    for stack in (1, 2, 4, 8):
        front = FbankFrontEnd(16, stack)
        field, hop = front.receptive_field()
        assert hop == 160 * stack
        for samples in (0, 399, 400, 401, field - 1, field, field + hop - 1, field + hop, 16000 + 7):
            frames = front(torch.randn(1, samples)).shape[-1] if samples else 0
            assert frames == int(front.output_lengths(torch.tensor([samples]))[0]), (stack, samples)
            assert (frames > 0) == (samples >= field)  # one frame needs exactly the receptive field
        # frames [a, b) come from samples [a * hop, (b - 1) * hop + field): the piece alone gives them
        wave = torch.randn(16000)
        whole = FbankFrontEnd(16, stack, normalize=False)(wave[None])
        a, b = 3, 9
        piece = FbankFrontEnd(16, stack, normalize=False)(wave[None, a * hop : (b - 1) * hop + field])
        torch.testing.assert_close(piece, whole[..., a:b], atol=1e-5, rtol=1e-5)


# Both ways to 40 ms (stacking, and conv subsampling with its own tests in test_conv_fbank.py) share these tests:
# the properties long-form inference and batching rely on hold for every filterbank front end.
FRONT_ENDS = {"stack": lambda bins: FbankFrontEnd(bins, 4), "conv": lambda bins: ConvFbankFrontEnd(bins, 4, channels=8)}


@pytest.mark.parametrize("subsampling", sorted(FRONT_ENDS))
def test_a_padded_batch_gives_what_each_utterance_gives_alone(subsampling):
    torch.manual_seed(0)
    front = FRONT_ENDS[subsampling](80)
    waves = [_speechlike(s, seed=i) for i, s in enumerate((1.31, 0.42, 0.97))]
    lengths = torch.tensor([w.numel() for w in waves])
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    out = front(batch, lengths)  # (B, C, T)
    frames = front.output_lengths(lengths)
    for i, wave in enumerate(waves):
        alone = front(wave[None])[0]
        assert alone.shape[-1] == int(frames[i])
        torch.testing.assert_close(out[i, :, : int(frames[i])], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("subsampling", sorted(FRONT_ENDS))
@pytest.mark.parametrize("frames_per_chunk", [1, 7, 10_000])
def test_inputs_read_in_pieces_equal_one_pass(frames_per_chunk, subsampling):
    """Long-form inference reads an input piece by piece: statistics come from a first pass over all of it."""
    torch.manual_seed(0)
    front = FRONT_ENDS[subsampling](80)
    wave = _speechlike(6.1, seed=3, silence=(2.0, 2.4))
    whole = front(wave[None])
    pieces = longform.front_end_long(front, wave, frames_per_chunk=frames_per_chunk)
    assert pieces.shape == whole.shape
    torch.testing.assert_close(pieces, whole, atol=2e-5, rtol=1e-4)


def _fbank_config(**overrides):
    values = dict(frontend="fbank", fbank_bins=40, fbank_stack=4, attention=LOCAL, vocab_size=12)
    return tiny(**{**values, **overrides})


def test_a_saved_fbank_model_holds_no_front_end_tensors_and_loads_equal(tmp_path):
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(_fbank_config()).eval()
    path = save_model(model, tmp_path / "m")
    header = json.loads((tmp_path / "m" / "config.json").read_text())
    assert header["config"]["frontend"] == "fbank"
    loaded = load_model(path)
    assert not any("feature_extractor" in name for name in loaded.state_dict())
    wave = _speechlike(1.3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(wave[None])[0], model(wave[None])[0])
    cnn_parameters = sum(p.numel() for p in Wav2Vec2ForCTC(tiny(vocab_size=12)).parameters())
    assert sum(p.numel() for p in model.parameters()) < cnn_parameters


@pytest.mark.parametrize("subsampling, field", [("stack", 880), ("conv", 1360)])
@pytest.mark.parametrize("encoder_block", ["transformer", "conformer"])
def test_fbank_models_stream_batch_and_slice_like_one_pass(encoder_block, subsampling, field, monkeypatch):
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(
        _fbank_config(
            encoder_block=encoder_block, conformer_kernel=5, fbank_subsampling=subsampling, fbank_conv_channels=8
        )
    ).eval()
    inference = longform.LongFormCTC(model)
    assert inference.hop == 640 and inference.min_samples == field and inference.streamable
    kernel_reach = 2 if encoder_block == "conformer" else 0
    assert longform.encoder_halo(model.wav2vec2) == 8 + 2 * (6 + kernel_reach)
    waves = [_speechlike(s, seed=i, silence=(0.2, 0.3)) for i, s in enumerate((9.3, 1.1, 3.7))]
    one_pass = [inference.logits([w])[0] for w in waves]
    for logits, reference in zip(inference.logits(waves), one_pass):  # a padded batch
        torch.testing.assert_close(logits, reference, atol=2e-5, rtol=1e-4)
    wave = waves[0]
    streamed = torch.cat(
        list(longform.stream_logits(model, lambda a, b: wave[a:b], wave.numel(), window_frames=40, frames_per_chunk=13))
    )
    torch.testing.assert_close(streamed, one_pass[0], atol=2e-5, rtol=1e-4)
    monkeypatch.setattr(longform, "SLICE_FRAMES", 11)  # encoder time slices, far shorter than the input
    torch.testing.assert_close(inference.logits([wave])[0], one_pass[0], atol=2e-5, rtol=1e-4)


def test_transcribe_cli_with_an_fbank_model_reports_too_short_inputs(tmp_path, capsys):
    vocab = CharVocabulary.build(["नमस्ते दुनिया भारत"])
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(_fbank_config(vocab_size=len(vocab))).eval()
    with torch.no_grad():
        model.head.bias.copy_(torch.linspace(-1, 1, len(vocab)))
        model.head.bias[0] = -3.0
    model_dir = save_model(model, tmp_path / "model", extra_files={"tokens.json": vocab.to_json()})
    inputs = tmp_path / "in"
    inputs.mkdir()
    sf.write(inputs / "a.wav", _speechlike(1.4).numpy(), 16000)
    sf.write(inputs / "b.flac", _speechlike(0.9, seed=1).numpy(), 22050)  # resampled on reading
    sf.write(inputs / "short.wav", _speechlike(0.04, seed=2).numpy(), 16000)  # 640 samples < one 880-sample frame
    out = tmp_path / "out"
    code = cli_main(
        ["transcribe", str(model_dir), str(inputs), "--output-dir", str(out), "--output-format", "json", "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "short: empty audio, empty transcript" in err
    assert json.loads((out / "a.json").read_text(encoding="utf-8"))["text"]
    assert json.loads((out / "short.json").read_text(encoding="utf-8"))["text"] == ""


def test_front_end_settings_are_checked():
    for key, value, message in [
        ("frontend", "mfcc", "frontend must be one of cnn, fbank"),
        ("fbank_stack", 0, "fbank_stack must be at least 1"),
        ("encoder_block", "lstm", "encoder_block must be one of"),
        ("conformer_kernel", 4, "conformer_kernel must be odd"),
    ]:
        with pytest.raises(ValueError, match=message):
            Wav2Vec2Config(**{key: value}).validate()


def test_frequency_masks_hide_the_same_bins_in_every_stacked_frame_in_training_only():
    from seqattn.models.wav2vec2.masking import frequency_mask, generators_for

    masks = frequency_mask(64, 40, 2, 7, generators_for(range(64)))
    widths = masks.sum(1)
    assert widths.max() <= 14 and widths.float().mean() > 3  # two bands of up to 7 bins, not all empty
    assert torch.equal(masks, frequency_mask(64, 40, 2, 7, generators_for(range(64))))  # per-utterance seeds
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(_fbank_config(fbank_freq_masks=2, fbank_freq_width=7, mask_prob=0.0)).train()
    seen = []
    model.wav2vec2.feature_projection.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    waves = torch.stack([_speechlike(1.0, seed=1), _speechlike(1.0, seed=2)])
    model.training_forward(waves, None, mask_generators=generators_for([5, 6]))
    expected = frequency_mask(2, 40, 2, 7, generators_for([5, 6]))  # (B, bins)
    x = seen[-1].view(2, -1, 4, 40)  # (B, T, stack, bins)
    for row in range(2):
        hidden = (x[row] == 0).all(0).all(0)  # (bins,): zero in every frame and every stacked copy
        assert torch.equal(hidden, expected[row])
    model.training_forward(waves, None)  # no generators (validation, inference): nothing masked
    assert not (seen[-1] == 0).all(1).any()
    with pytest.raises(ValueError, match="fbank_freq_masks .* needs frontend: fbank"):
        tiny(fbank_freq_masks=2).validate()


def test_choices_are_typed_when_a_config_is_read():
    for key, value in [("frontend", "mfcc"), ("objective", "mae"), ("encoder_block", "lstm"),
                       ("fbank_subsampling", "pool"), ("conformer_norm", "group"), ("extractor_mode", "none")]:
        with pytest.raises(ValueError, match=rf"{key} is '{value}' \(str\), expected one of '"):
            Wav2Vec2Config.from_dict({key: value})
