"""`seqattn transcribe`: every kind of input, bad inputs counted and reported, output files parsed back."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import make_data_dir, tone_wave
from model_fixtures import ctc_model_dir

from seqattn.cli.main import main as cli_main
from seqattn.data.text import CharVocabulary
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, longform, tiny
from seqattn.models.wav2vec2.longform import LongFormCTC
from seqattn.nn import AttentionConfig
from seqattn.nn.heads import LocalHeads

LOCAL = AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=8, window_right=8))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return ctc_model_dir(tmp_path_factory.mktemp("model") / "ctc")


def _write(path, seconds, rate=16000, channels=1, seed=0):
    wave = tone_wave(seconds, rate, np.random.default_rng(seed))
    sf.write(path, np.stack([wave] * channels, 1) if channels > 1 else wave, rate)


def test_files_directories_and_bad_inputs(model_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    _write(inputs / "a.wav", 1.2)
    _write(inputs / "sub" / "b.flac", 0.8, rate=48000, channels=2)
    _write(inputs / "c.wav", 1.0, rate=8000)
    sf.write(inputs / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    sf.write(inputs / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    (inputs / "garbage.wav").write_bytes(b"not audio at all" * 100)
    (inputs / "broken.wav").symlink_to(tmp_path / "nowhere.wav")
    out = tmp_path / "out"
    code = cli_main(["transcribe", str(model_dir), str(inputs), str(tmp_path / "missing.wav"), "--output-dir",
                     str(out), "--output-format", "all", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    failed = (out / "failed.txt").read_text()
    assert "garbage" in failed and "broken" in failed and "missing.wav" in failed
    assert "transcribed 5 of 8 inputs" in err  # a, b, c, silent, empty; 3 failed: counts are conserved
    assert "silent audio, empty transcript" in err and "empty audio" in err
    assert "Traceback" not in err
    for name, seconds in (("a", 1.2), ("b", 0.8), ("c", 1.0)):
        data = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        assert data["text"] and data["duration"] == pytest.approx(seconds, abs=0.01)
        starts = [w["start"] for w in data["words"]]
        assert starts == sorted(starts) and all(0 <= w["start"] < w["end"] <= seconds + 0.03 for w in data["words"])
        srt = (out / f"{name}.srt").read_text(encoding="utf-8")
        assert srt.startswith("1\n00:00:0") and " --> " in srt
        assert (out / f"{name}.vtt").read_text(encoding="utf-8").startswith("WEBVTT")
        ctm = [line.split() for line in (out / f"{name}.ctm").read_text(encoding="utf-8").splitlines()]
        assert len(ctm) == len(data["words"]) and all(row[0] == name for row in ctm)
    assert (out / "silent.txt").read_text() == "\n"


def test_data_dir_with_references_prints_kaldi_scores(model_dir, tmp_path, capsys):
    data_dir = make_data_dir(tmp_path, "test", 3, "hi", texts=["नमस्ते दुनिया", "भारत"])
    out = tmp_path / "out"
    assert cli_main(["transcribe", str(model_dir), "--data-dir", str(data_dir), "--output-dir", str(out),
                     "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("%WER ") and "\n%CER " in printed and " ins, " in printed
    assert (out / "per_utt").is_file() and (out / "wer").read_text().startswith("%WER")


def test_several_data_dirs_are_decoded_each_into_its_own_dir(model_dir, tmp_path, capsys):
    """One call, one model load: each set is written and scored as a call of its own would; a set that cannot
    be read is reported in its failed.txt and the others go on."""
    dev = make_data_dir(tmp_path / "a", "dev_hi", 2, "hi", texts=["नमस्ते दुनिया", "भारत"])
    test = make_data_dir(tmp_path / "b", "test_hi", 3, "hi", texts=["दुनिया", "भारत देश"])
    for data in (dev, test):
        assert cli_main(["transcribe", str(model_dir), "--data-dir", str(data), "--output-dir",
                         str(tmp_path / "alone" / data.name), "--quiet"]) == 0
    alone = capsys.readouterr().out.splitlines()
    out = tmp_path / "together"
    assert cli_main(["transcribe", str(model_dir), "--data-dir", str(dev), "--data-dir", str(test),
                     "--output-dir", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines() == alone  # %WER/%CER per set, in order
    for name in ("dev_hi", "test_hi"):
        for file in ("text", "wer", "per_utt"):
            assert (out / name / file).read_text("utf-8") == (tmp_path / "alone" / name / file).read_text("utf-8")
    missing = tmp_path / "c" / "test_ta"
    assert cli_main(["transcribe", str(model_dir), "--data-dir", str(missing), "--data-dir", str(test),
                     "--output-dir", str(tmp_path / "partial"), "--quiet"]) == 1
    assert "test_ta" in capsys.readouterr().err
    assert str(missing) in (tmp_path / "partial" / "test_ta" / "failed.txt").read_text()
    assert (tmp_path / "partial" / "test_hi" / "wer").read_text() == (out / "test_hi" / "wer").read_text()
    for clash in (["--data-dir", str(test), "--data-dir", str(tmp_path / "d" / "test_hi")],
                  [str(tmp_path / "x.wav"), "--data-dir", str(test), "--data-dir", str(dev)]):
        assert cli_main(["transcribe", str(model_dir), *clash, "--output-dir", str(tmp_path / "no")]) == 2
        assert "several --data-dir" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed (tools/install_system_deps.sh)")
def test_piped_wav_scp_and_segments_and_no_pipes(model_dir, tmp_path, capsys):
    _write(tmp_path / "rec.wav", 3.0)
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"rec1 sox {tmp_path / 'rec.wav'} -t wav - |\nrec2 false |\n")
    (data / "segments").write_text("u1 rec1 0.0 1.5\nu2 rec1 1.5 3.0\nu3 rec2 0 1\n")
    (data / "utt2spk").write_text("u1 s\nu2 s\nu3 s\n")
    out = tmp_path / "out"
    assert cli_main(["transcribe", str(model_dir), "--data-dir", str(data), "--output-dir", str(out), "--quiet"]) == 1
    assert "transcribed 2 of 3 inputs" in capsys.readouterr().err
    assert "pipe command failed" in (out / "failed.txt").read_text()
    assert cli_main(["transcribe", str(model_dir), "--data-dir", str(data), "--output-dir", str(out), "--quiet",
                     "--no-pipes"]) == 1
    assert "transcribed 0 of 3 inputs" in capsys.readouterr().err


def test_model_dir_errors(tmp_path, capsys):
    assert cli_main(["transcribe", str(tmp_path / "nope"), "x.wav"]) == 2
    assert "does not exist" in capsys.readouterr().err
    model = ctc_model_dir(tmp_path / "m")
    (model / "tokens.json").unlink()
    assert cli_main(["transcribe", str(model), "x.wav"]) == 2
    assert "tokens.json" in capsys.readouterr().err


def test_chunked_logits_match_one_pass_for_local_models(tmp_path):
    """With a layer-norm extractor and local attention every frame's context is bounded, so overlapping
    chunks reproduce the one-pass logits."""
    model = Wav2Vec2ForCTC(tiny(vocab_size=8, extractor_mode="layer_norm", attention=LOCAL)).eval()
    wave = torch.from_numpy(tone_wave(12.0, 16000, np.random.default_rng(0)))
    with torch.no_grad():
        full = model(wave[None])[0][0]
        chunked = LongFormCTC(model).chunked_logits(wave, chunk=16000 * 3, overlap=16000)
    assert chunked.shape == full.shape
    torch.testing.assert_close(chunked, full, atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("extractor_mode", ["default", "layer_norm"])
def test_long_input_cnn_in_chunks_equals_one_pass(extractor_mode):
    """front_end_long must reproduce the whole-utterance CNN exactly, including the base model's GroupNorm,
    whose statistics span the entire input (gathered in a first pass)."""
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny(vocab_size=8, extractor_mode=extractor_mode)).eval()
    wave = torch.from_numpy(tone_wave(7.3, 16000, np.random.default_rng(1)))
    extractor = model.wav2vec2.feature_extractor
    with torch.no_grad():
        whole = extractor(wave[None])
        for frames in (1, 37, 100, 10_000):
            chunked = longform.front_end_long(extractor, wave, frames_per_chunk=frames)
            assert chunked.shape == whole.shape
            torch.testing.assert_close(chunked, whole, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_feed_forward_slices_long_inputs_without_changing_them(monkeypatch, layer_norm_first):
    from seqattn.models.wav2vec2.components import EncoderLayer

    torch.manual_seed(0)
    layer = EncoderLayer(16, 64, AttentionConfig(num_heads=2), layer_norm_first, 0.0, 0.0, 1e-5).eval()
    x = torch.randn(2, 501, 16)
    with torch.no_grad():
        whole = layer.feed_forward(x)
        monkeypatch.setattr(longform, "FEED_FORWARD_SLICE", 50)
        sliced = longform.feed_forward_in_slices(layer, x)
    torch.testing.assert_close(sliced, whole, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("extractor_mode", ["default", "layer_norm"])
def test_batched_logits_equal_single_utterance_logits(extractor_mode):
    """Padding must not change any utterance's logits, even with the GroupNorm extractor (each utterance
    goes through the CNN alone) and with local and full attention heads mixed."""
    torch.manual_seed(0)
    mixed = AttentionConfig(num_heads=4, local=LocalHeads(heads=2, window_left=6, window_right=6))
    model = Wav2Vec2ForCTC(tiny(vocab_size=9, extractor_mode=extractor_mode, attention=mixed)).eval()
    rng = np.random.default_rng(2)
    waves = [torch.from_numpy(tone_wave(s, 16000, rng)) for s in (0.41, 1.73, 0.97, 1.2)]
    batched = LongFormCTC(model).logits(waves)
    for wave, logits in zip(waves, batched):
        single = LongFormCTC(model).logits([wave])[0]
        with torch.no_grad():
            reference = model(wave[None])[0][0]
        assert logits.shape == single.shape == reference.shape
        torch.testing.assert_close(logits, reference, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(single, reference, atol=2e-5, rtol=1e-4)


def test_cli_batch_size_gives_the_same_transcripts(model_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, seconds in enumerate((0.6, 1.9, 1.1, 0.8, 1.4)):
        _write(inputs / f"u{i}.wav", seconds, seed=i)
    outputs = {}
    for batch in ("1", "3"):
        out = tmp_path / f"out{batch}"
        assert cli_main(["transcribe", str(model_dir), str(inputs), "--output-dir", str(out), "--output-format",
                         "json", "--batch-size", batch, "--quiet"]) == 0
        outputs[batch] = {p.name: json.loads(p.read_text(encoding="utf-8"))["text"] for p in sorted(out.glob("*.json"))}
    assert len(outputs["1"]) == 5 and outputs["1"] == outputs["3"]
    assert any(outputs["1"].values())
    assert cli_main(["transcribe", str(model_dir), str(inputs), "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err


@pytest.mark.parametrize("heads", ["local", "mixed"])
def test_encoder_time_slices_equal_one_pass(heads, monkeypatch):
    """Long-input inference runs all-local layers (and the positional conv) on overlapping time slices;
    the result must equal the one-pass encoder, with padding in the batch. Mixed layers run whole."""
    torch.manual_seed(0)
    local_heads = 4 if heads == "local" else 2
    attention = AttentionConfig(num_heads=4, local=LocalHeads(heads=local_heads, window_left=5, window_right=3))
    model = Wav2Vec2ForCTC(tiny(vocab_size=7, attention=attention)).eval()
    rng = np.random.default_rng(3)
    waves = [torch.from_numpy(tone_wave(s, 16000, rng)) for s in (2.3, 1.7)]
    whole = LongFormCTC(model).logits(waves)
    monkeypatch.setattr(longform, "SLICE_FRAMES", 9)  # slices of 9 frames, far shorter than the 16-frame conv
    sliced = LongFormCTC(model).logits(waves)
    for a, b in zip(whole, sliced):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)


def test_greedy_path_word_times_equal_forced_alignment_of_the_greedy_transcript():
    """Long inputs take their word times from the greedy path (forced alignment's trellis would not fit in
    memory). For a greedy transcript that path is a best alignment: the words are forced alignment's and so
    are the times, except where forced alignment gives a word the frames of a boundary token stripped from
    the transcript (a few frames)."""
    from seqattn.decode.align import GreedyPath, align_words, greedy_path_words
    from seqattn.decode.ctc import greedy_decode
    from seqattn.decode.transcribe import strip_boundaries

    vocab = CharVocabulary.build(["नमस्ते दुनिया भारत"])
    boundary = vocab.index["|"]
    generator = torch.Generator().manual_seed(3)
    checked, ends, same_ends = 0, 0, 0
    for _ in range(20):
        # peaked random posteriors over 300 frames: runs of tokens, blanks and boundaries
        ids = torch.randint(0, len(vocab), (300,), generator=generator)
        ids = torch.repeat_interleave(ids[::3], 3)
        logits = torch.randn(300, len(vocab), generator=generator) + 8 * torch.nn.functional.one_hot(ids, len(vocab))
        log_probs = torch.log_softmax(logits, -1)
        tokens = strip_boundaries(greedy_decode(logits).tokens, boundary)
        text = vocab.decode(tokens)
        if not text:
            continue
        forced = align_words(log_probs, tokens, text.split(), boundary, 0.02)
        path = greedy_path_words(GreedyPath.of(log_probs), text.split(), boundary, 0.02)
        assert [w.word for w in path] == [w.word for w in forced]
        assert all(abs(p.start - f.start) <= 0.15 and abs(p.end - f.end) <= 0.15 for p, f in zip(path, forced))
        ends += len(path)
        same_ends += sum(abs(p.start - f.start) < 1e-9 and abs(p.end - f.end) < 1e-9 for p, f in zip(path, forced))
        checked += 1
    assert checked > 10 and same_ends >= 0.8 * ends


def test_decoding_a_data_dir_writes_a_decode_directory(model_dir, tmp_path, capsys):
    """Kaldi/ESPnet-style outputs: the hypotheses as a Kaldi text file, totals in wer, per-language scores
    from utt2lang, and jiwer's per-utterance alignment; stdout keeps the two summary lines."""
    import jiwer

    hindi = make_data_dir(tmp_path, "hi", 3, "hi", texts=["नमस्ते दुनिया", "भारत"])
    both = tmp_path / "both"
    both.mkdir()
    for name in ("wav.scp", "text", "utt2spk", "utt2lang"):  # a second language: the same audio, relabelled
        lines = (hindi / name).read_text(encoding="utf-8").splitlines()
        relabel = {"wav.scp": lambda line: line.replace("hi-", "mr-", 1),  # the id, not the audio path
                   "text": lambda line: line.replace("hi-", "mr-", 1),
                   "utt2spk": lambda line: line.replace("hi-", "mr-"),
                   "utt2lang": lambda line: line.replace("hi-", "mr-", 1).replace(" hi", " mr")}[name]
        extra = [relabel(line) for line in lines]
        (both / name).write_text("\n".join(sorted(lines + extra)) + "\n", encoding="utf-8")
    out = tmp_path / "decode"
    assert cli_main(["transcribe", str(model_dir), "--data-dir", str(both), "--output-dir", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].startswith("%WER") and printed[1].startswith("%CER")
    hyps = dict(line.split(" ", 1) if " " in line else (line, "")
                for line in (out / "text").read_text(encoding="utf-8").splitlines())
    assert sorted(hyps) == sorted(line.split()[0] for line in (both / "text").read_text().splitlines())
    for utt, text in hyps.items():
        assert (out / f"{utt}.txt").read_text(encoding="utf-8").strip() == text.strip()
    per_language = (out / "wer_per_language").read_text(encoding="utf-8").splitlines()
    assert [line.rsplit("[", 1)[1].split(",")[0].rstrip("]") for line in per_language] == ["hi", "hi", "mr", "mr"]
    refs = dict(line.split(" ", 1) for line in (both / "text").read_text(encoding="utf-8").splitlines())
    hindi_utts = sorted(u for u in refs if u.startswith("hi-"))
    expected = jiwer.process_words([refs[u] for u in hindi_utts], [hyps[u] for u in hindi_utts])
    errors = expected.substitutions + expected.deletions + expected.insertions
    assert f"[ {errors} / " in per_language[0] and "3 utterances" in per_language[0]


def test_fairseq_tsv_manifests_are_inputs_too(model_dir, tmp_path, capsys):
    """transcribe --manifest and analyze read fairseq's train.tsv (+ train.wrd) as training does."""
    from pathlib import Path

    import soundfile as sf

    data_dir = make_data_dir(tmp_path, "test", 3, "hi", texts=["नमस्ते दुनिया", "भारत"])
    rows = [line.split(" ", 1) for line in (data_dir / "wav.scp").read_text().splitlines()]
    texts = dict(line.split(" ", 1) for line in (data_dir / "text").read_text(encoding="utf-8").splitlines())
    root = Path(rows[0][1]).parent
    (tmp_path / "test.tsv").write_text(f"{root}\n" + "".join(
        f"{Path(path).name}\t{sf.info(path).frames}\n" for _, path in rows))
    (tmp_path / "test.wrd").write_text("".join(f"{texts[utt]}\n" for utt, _ in rows), encoding="utf-8")
    out = tmp_path / "out"
    assert cli_main(["transcribe", str(model_dir), "--manifest", str(tmp_path / "test.tsv"), "--output-dir",
                     str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("%WER ") and len((out / "text").read_text().splitlines()) == 3
    assert cli_main(["analyze", "attention", str(model_dir), str(tmp_path / "test.tsv"), "--out-dir",
                     str(tmp_path / "analysis"), "--quiet", "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "analysis" / "attention.json").read_text())["utterances"] == 3
