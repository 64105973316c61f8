"""Streaming long inputs: audio read in pieces equals the whole file, windowed logits equal one pass,
memory stays bounded by the window, and streamed transcription equals one-pass transcription."""
import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import tone_wave

from seqattn.data.audio import AudioError, AudioSource, load_audio, normalize_waveform
from seqattn.data.audio_stream import StreamingAudio
from seqattn.data.text import CharVocabulary
from seqattn.decode import transcribe as transcribe_module
from seqattn.decode.transcribe import Beam, InputItem, transcribe
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, longform, tiny
from seqattn.nn import AttentionConfig
from seqattn.nn.heads import DilatedHeads, LocalHeads, RoutingHeads

LOCAL = AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=8, window_right=6))


def _tone_file(path, seconds, rate=16000, channels=1, seed=0):
    wave = tone_wave(seconds, rate, np.random.default_rng(seed))
    sf.write(path, np.stack([wave * (1 + 0.1 * c) for c in range(channels)], 1) if channels > 1 else wave, rate)
    return path


@pytest.mark.parametrize("rate,channels,fmt", [(16000, 1, "wav"), (44100, 2, "flac"), (8000, 1, "wav"),
                                               (22050, 3, "flac")])
def test_streamed_reads_equal_the_whole_file(tmp_path, rate, channels, fmt):
    path = _tone_file(tmp_path / f"a.{fmt}", 7.3, rate, channels)
    for source in (AudioSource(str(path)), AudioSource(str(path), 1.37, 5.91)):
        whole = load_audio(source, 16000)
        with StreamingAudio(source, 16000, block_seconds=0.77) as stream:
            assert stream.num_samples == whole.numel()
            pieces = torch.cat([block for _, block in stream.blocks()])
            torch.testing.assert_close(pieces, whole, atol=2e-6, rtol=0)
            for start, stop in [(0, 1), (12345, 23456), (whole.numel() - 999, whole.numel() + 50), (-5, 10)]:
                torch.testing.assert_close(stream.read(start, stop), whole[max(0, start) : stop], atol=2e-6, rtol=0)
            statistics = stream.statistics()
        assert statistics.mean == pytest.approx(float(whole.double().mean()), abs=1e-7)
        assert statistics.variance == pytest.approx(float(whole.double().var(unbiased=False)), rel=1e-5)
        assert statistics.peak == pytest.approx(float(whole.abs().max()), rel=1e-6)


def test_stream_errors_name_the_file_and_the_place(tmp_path):
    wave = tone_wave(3.0, 16000, np.random.default_rng(0))
    wave[int(2.5 * 16000)] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    with StreamingAudio(AudioSource(str(path)), 16000, block_seconds=1.0) as stream:
        stream.read(0, 16000)  # the first second is fine
        with pytest.raises(AudioError, match=r"nan\.wav.*NaN or infinite samples \(first at 2\.50 s\)"):
            stream.statistics()
    with pytest.raises(AudioError, match="no such file"):
        StreamingAudio(AudioSource(str(tmp_path / "missing.wav")))
    with pytest.raises(AudioError, match="is a directory"):
        StreamingAudio(AudioSource(str(tmp_path)))
    with pytest.raises(AudioError, match="cannot be streamed"):
        StreamingAudio(AudioSource("cat x.wav |"))
    with pytest.raises(AudioError, match="lies outside the recording"):
        StreamingAudio(AudioSource(str(path), 4.0, 5.0))
    (tmp_path / "garbage.wav").write_bytes(b"RIFF....WAVE" + b"x" * 100)
    with pytest.raises(AudioError, match="garbage.wav"):
        StreamingAudio(AudioSource(str(tmp_path / "garbage.wav")))


def _model(extractor_mode="default", attention=LOCAL, **overrides):
    torch.manual_seed(0)
    return Wav2Vec2ForCTC(tiny(vocab_size=12, attention=attention, extractor_mode=extractor_mode, **overrides)).eval()


@pytest.mark.parametrize("extractor_mode", ["default", "layer_norm"])
@pytest.mark.parametrize("samples", [16000 * 7 + 123, 5000, 401])
def test_streamed_logits_equal_one_pass(extractor_mode, samples):
    model = _model(extractor_mode)
    wave = torch.randn(samples)
    one_pass = longform.LongFormCTC(model).logits([wave])[0]
    streamed = torch.cat(list(longform.stream_logits(model, lambda a, b: wave[a:b], samples, window_frames=50,
                                                      frames_per_chunk=37)))
    assert streamed.shape == one_pass.shape
    torch.testing.assert_close(streamed, one_pass, atol=2e-5, rtol=0)


@pytest.mark.parametrize("attention,halo,samples", [
    # per-head windows: the halo follows the widest head
    (AttentionConfig(num_heads=4, local=LocalHeads(heads=4, windows=[[8, 6], [2, 2], [0, 11], [5, 0]])), 8 + 2 * 11,
     16000 * 4 + 77),
    # dilated heads reach dilation * dilated_window frames
    (AttentionConfig(num_heads=4, local=LocalHeads(heads=2, window_left=4, window_right=4),
                     dilated=DilatedHeads(heads=2, dilation=3, window=3)), 8 + 2 * 9, 16000 * 4 + 301),
], ids=["per-head-windows", "dilated"])
def test_bounded_reach_heads_stream_like_one_pass(attention, halo, samples):
    model = _model("layer_norm", attention=attention)
    assert longform.encoder_halo(model.wav2vec2) == halo
    wave = torch.randn(samples)
    one_pass = longform.LongFormCTC(model).logits([wave])[0]
    streamed = torch.cat(list(longform.stream_logits(model, lambda a, b: wave[a:b], wave.numel(), window_frames=40)))
    torch.testing.assert_close(streamed, one_pass, atol=2e-5, rtol=0)


def test_too_small_a_halo_is_caught(monkeypatch):
    """The halo matters: with half of it the frames near the window edges move far beyond rounding."""
    model = _model("layer_norm")
    wave = torch.randn(16000 * 5)
    one_pass = longform.LongFormCTC(model).logits([wave])[0]

    def streamed():
        return torch.cat(list(longform.stream_logits(model, lambda a, b: wave[a:b], wave.numel(), window_frames=40)))

    halo = longform.encoder_halo(model.wav2vec2)
    assert halo == 8 + 2 * 8  # half the positional kernel (16) + two layers reaching 8 frames
    exact = (streamed() - one_pass).abs().max()
    monkeypatch.setattr(longform, "encoder_halo", lambda backbone: halo // 2)
    short = (streamed() - one_pass).abs().max()
    print(f"max |difference|: full halo {exact:.2e}, half halo {short:.2e}")
    assert exact < 2e-5 and short > 50 * exact


def test_reads_are_bounded_by_the_window_not_the_input():
    """Memory is bounded: however long the input, no read asks for more than a window plus its halos (or,
    in the GroupNorm statistics pass, one CNN chunk)."""
    model = _model("default")
    halo, (field, hop) = longform.encoder_halo(model.wav2vec2), model.wav2vec2.feature_extractor.receptive_field()
    largest = {}
    for seconds in (30, 90):
        wave = torch.randn(16000 * seconds)
        spans = []

        def read(start, stop, wave=wave, spans=spans):
            spans.append(stop - start)
            return wave[start:stop]

        frames = list(longform.stream_logits(model, read, wave.numel(), window_frames=64, frames_per_chunk=128))
        assert len(frames) == -(-sum(f.shape[0] for f in frames) // 64) > 20
        largest[seconds] = max(spans)
    assert largest[30] == largest[90] <= max((64 + 2 * halo - 1) * hop + field, 128 * hop + 10) < 16000 * 90 / 10


@pytest.mark.parametrize(
    "attention",
    [
        AttentionConfig(
            num_heads=4,
            local=LocalHeads(heads=2, window_left=8, window_right=8),
            routing=RoutingHeads(heads=2, clusters=2, window=8),
        ),
        AttentionConfig(num_heads=4),  # full attention
    ],
    ids=["routing", "full"],
)
def test_models_with_unbounded_reach_are_not_streamed(attention):
    model = _model(attention=attention)
    assert longform.encoder_halo(model.wav2vec2) is None
    wave = torch.randn(16000)
    with pytest.raises(ValueError, match="cannot be streamed"):
        next(longform.stream_logits(model, lambda a, b: wave[a:b], wave.numel()))


def _vocab_and_model(normalize):
    vocab = CharVocabulary.build(["नमस्ते दुनिया भारत"])
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny(vocab_size=len(vocab), attention=LOCAL, normalize_waveform=normalize)).eval()
    with torch.no_grad():  # make blank not always win and words short, so transcripts have many words
        model.head.bias.copy_(torch.linspace(-1, 1, len(vocab)))
        model.head.bias[0] = -3.0
        model.head.bias[vocab.index["|"]] = 1.0
    return vocab, model


@pytest.mark.parametrize(
    "normalize,align_limit",
    [(False, None), (True, None), (False, 1000)],
    ids=["forced-alignment-times", "normalized-input", "greedy-path-times"],
)
def test_streamed_transcription_equals_one_pass(tmp_path, monkeypatch, normalize, align_limit):
    """Same text and word times; with align_limit, inputs longer than it take their times from the greedy
    path (the path of a streamed input is pieced together from its windows)."""
    if align_limit is not None:
        monkeypatch.setattr(transcribe_module, "MAX_ALIGN_FRAMES", align_limit)
    vocab, model = _vocab_and_model(normalize)
    items = [
        InputItem("long", AudioSource(str(_tone_file(tmp_path / "long.flac", 61.3, 44100, 2)))),
        InputItem("short", AudioSource(str(_tone_file(tmp_path / "short.wav", 2.0, seed=1)))),
        InputItem("silent", AudioSource(str(tmp_path / "silent.wav"))),
    ]
    sf.write(tmp_path / "silent.wav", np.zeros(40000, dtype=np.float32), 16000)
    monkeypatch.setattr(longform, "STREAM_WINDOW_FRAMES", 500)  # a minute of audio in 7 windows
    one_pass = transcribe(model, vocab, items, progress=False, stream_seconds=float("inf"))
    streamed = transcribe(model, vocab, items, progress=False, stream_seconds=0.0)
    assert [t.text for t in streamed.transcripts] == [t.text for t in one_pass.transcripts]
    assert len(streamed.transcripts[0].text.split()) > 20 and streamed.transcripts[2].text == ""
    assert streamed.audio_seconds == pytest.approx(one_pass.audio_seconds)
    assert any("silent" in warning for warning in streamed.warnings)
    for a, b in zip(streamed.transcripts, one_pass.transcripts):
        assert [(w.word, round(w.start, 3), round(w.end, 3)) for w in a.words] == [
            (w.word, round(w.start, 3), round(w.end, 3)) for w in b.words
        ]


def test_streamed_beam_search_equals_one_pass(tmp_path, monkeypatch):
    pytest.importorskip("flashlight.lib.text", reason="flashlight-text is not installed (pip install flashlight-text)")
    vocab, model = _vocab_and_model(False)
    items = [InputItem("long", AudioSource(str(_tone_file(tmp_path / "long.wav", 30.0))))]
    monkeypatch.setattr(longform, "STREAM_WINDOW_FRAMES", 300)
    beam = Beam(vocab, 8, None, None, 0.0, 0.0)
    one_pass = transcribe(model, vocab, items, beam=beam, progress=False, stream_seconds=float("inf"))
    streamed = transcribe(model, vocab, items, beam=beam, progress=False, stream_seconds=0.0)
    assert streamed.transcripts[0].text == one_pass.transcripts[0].text != ""


def test_a_bad_stretch_in_a_long_file_fails_that_file_only(tmp_path):
    vocab, model = _vocab_and_model(False)
    wave = tone_wave(20.0, 16000, np.random.default_rng(0))
    wave[16000 * 12] = np.inf
    sf.write(tmp_path / "bad.wav", wave, 16000, subtype="FLOAT")
    items = [
        InputItem("bad", AudioSource(str(tmp_path / "bad.wav"))),
        InputItem("good", AudioSource(str(_tone_file(tmp_path / "good.wav", 15.0)))),
    ]
    result = transcribe(model, vocab, items, progress=False, stream_seconds=10.0)
    assert [t.utt_id for t in result.transcripts] == ["good"]
    assert len(result.failures) == 1 and "first at 12.00 s" in result.failures[0].reason


def test_normalisation_statistics_match_normalize_waveform(tmp_path):
    """The streamed path normalises with whole-file statistics exactly as normalize_waveform does."""
    path = _tone_file(tmp_path / "a.wav", 3.0)
    whole = load_audio(str(path))
    with StreamingAudio(AudioSource(str(path))) as stream:
        statistics = stream.statistics()
        streamed = (stream.read(0, stream.num_samples) - statistics.mean) * (statistics.variance + 1e-5) ** -0.5
    torch.testing.assert_close(streamed, normalize_waveform(whole), atol=1e-5, rtol=0)


def test_cli_stream_seconds_gives_the_same_ctm(tmp_path, monkeypatch):
    from seqattn.cli.main import main as cli_main
    from seqattn.models.io import save_model

    vocab, model = _vocab_and_model(False)
    vocab.save(tmp_path / "tokens.json")
    model_dir = save_model(model, tmp_path / "model", extra_files={"tokens.json": tmp_path / "tokens.json"})
    audio = _tone_file(tmp_path / "talk.wav", 25.0)
    monkeypatch.setattr(longform, "STREAM_WINDOW_FRAMES", 256)
    ctm = {}
    for stream_seconds in ("5", "inf"):
        out = tmp_path / f"out_{stream_seconds}"
        assert (
            cli_main(
                [
                    "transcribe",
                    str(model_dir),
                    str(audio),
                    "--output-dir",
                    str(out),
                    "--output-format",
                    "ctm",
                    "--stream-seconds",
                    stream_seconds,
                    "--quiet",
                ]
            )
            == 0
        )
        ctm[stream_seconds] = [line.split()[:5] for line in (out / "talk.ctm").read_text().splitlines()]
    assert len(ctm["5"]) > 5 and ctm["5"] == ctm["inf"]


def test_streaming_every_input_still_reports_tiny_and_empty_files(tmp_path):
    vocab, model = _vocab_and_model(False)
    sf.write(tmp_path / "one.wav", np.full(1, 0.5, dtype=np.float32), 16000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    items = [InputItem(name, AudioSource(str(tmp_path / f"{name}.wav"))) for name in ("one", "empty")]
    result = transcribe(model, vocab, items, progress=False, stream_seconds=0.0)
    assert [(t.utt_id, t.text) for t in result.transcripts] == [("one", ""), ("empty", "")]
    assert sum("empty audio" in warning for warning in result.warnings) == 2 and not result.failures


def test_transcribe_returns_freed_heap_memory_every_few_inputs(tmp_path, monkeypatch):
    """Many inputs of different sizes fragment glibc's heap under the CLI's raised trim threshold; transcribe
    hands free pages back every TRIM_EVERY inputs (the memory effect is measured by bench_reliability)."""
    vocab, model = _vocab_and_model(False)
    path = _tone_file(tmp_path / "a.wav", 0.5)
    calls = []
    monkeypatch.setattr(transcribe_module, "release_free_memory", lambda: calls.append(1))
    count = 2 * transcribe_module.TRIM_EVERY + 3
    result = transcribe(
        model, vocab, [InputItem(f"u{i}", AudioSource(str(path))) for i in range(count)], progress=False
    )
    assert len(result.transcripts) == count and len(calls) == 2


@pytest.mark.parametrize("attention", [LOCAL, AttentionConfig(num_heads=2)], ids=["local", "full"])
def test_each_plain_file_is_opened_once_and_transcribed_as_load_audio_reads_it(tmp_path, monkeypatch, attention):
    """The header that decides whether to stream is the handle that then reads a short file whole: one open
    per file, whatever the model. The same files through `cat ... |` pipes (read whole by load_audio) give
    the same transcripts and word times."""
    vocab, local_model = _vocab_and_model(False)
    model = local_model
    if attention is not LOCAL:
        torch.manual_seed(0)
        model = Wav2Vec2ForCTC(tiny(vocab_size=len(vocab), attention=attention)).eval()
        model.head.load_state_dict(local_model.head.state_dict())  # the same many-word head
    paths = [_tone_file(tmp_path / "a.wav", 1.5), _tone_file(tmp_path / "b.flac", 2.0, rate=44100, channels=2)]
    opened, real_open = [], sf.SoundFile
    monkeypatch.setattr(sf, "SoundFile", lambda *args, **kwargs: opened.append(args[0]) or real_open(*args, **kwargs))
    files = transcribe(model, vocab, [InputItem(p.stem, AudioSource(str(p))) for p in paths], progress=False)
    assert sorted(map(str, opened)) == sorted(map(str, paths))
    pipes = transcribe(model, vocab, [InputItem(p.stem, AudioSource(f"cat {p} |")) for p in paths], progress=False)
    assert not files.failures and not pipes.failures
    words = lambda result: [(t.text, [(w.word, w.start, w.end) for w in t.words]) for t in result.transcripts]
    assert words(files) == words(pipes) and any(text for text, _ in words(files))
