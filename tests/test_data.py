"""Audio loading, Kaldi data dirs (validation, --fix, pipes, segments), manifests, language sampling."""
import json
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import make_data_dir, tone_wave

from seqattn.data.audio import AudioError, AudioSource, audio_duration, load_audio
from seqattn.data.kaldi import DataDirError, read_data_dir
from seqattn.data.labelled import LabelledItem, PaddedBatches
from seqattn.data.manifest import read_fairseq_manifest, read_jsonl_manifest
from seqattn.data.sampling import duration_batches, language_probabilities, temperature_epoch


def _wav(path, seconds=0.5, rate=16000, channels=1, seed=0):
    wave = tone_wave(seconds, rate, np.random.default_rng(seed))
    data = np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else wave
    sf.write(path, data, rate)
    return wave


def test_resampling_and_downmix(tmp_path):
    _wav(tmp_path / "a.wav", seconds=1.0, rate=48000, channels=2)
    wave = load_audio(str(tmp_path / "a.wav"))
    assert wave.dtype == torch.float32 and abs(wave.numel() - 16000) <= 1
    left = load_audio(str(tmp_path / "a.wav"), channel=0)
    assert not torch.allclose(wave, left)  # the mean of two different channels differs from channel 0
    _wav(tmp_path / "b.flac", seconds=0.5, rate=8000)
    assert abs(load_audio(str(tmp_path / "b.flac")).numel() - 8000) <= 1


@pytest.mark.parametrize("content,reason", [(b"", "cannot decode"), (b"RIFF\x00\x00garbage" * 10, "cannot decode")])
def test_corrupt_audio_names_the_file(tmp_path, content, reason):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match="broken.wav.*" + reason):
        load_audio(str(path))


def test_missing_directory_and_nan_audio(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(str(tmp_path / "nope.wav"))
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(str(tmp_path))
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.1], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(str(tmp_path / "nan.wav"))


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed (tools/install_system_deps.sh)")
def test_pipe_and_segments(tmp_path):
    wave = _wav(tmp_path / "rec.wav", seconds=2.0)
    piped = load_audio(AudioSource(f"sox {tmp_path / 'rec.wav'} -t wav - |"))
    torch.testing.assert_close(piped, torch.from_numpy(wave), atol=1e-4, rtol=0)
    segment = load_audio(AudioSource(str(tmp_path / "rec.wav"), 0.5, 1.25))
    assert segment.numel() == 12000
    with pytest.raises(AudioError, match="pipe command failed"):
        load_audio(AudioSource("false |"))
    with pytest.raises(AudioError, match="timed out"):
        load_audio(AudioSource("sleep 5 |"), pipe_timeout=0.5)
    with pytest.raises(AudioError, match="disabled"):
        load_audio(AudioSource("cat x.wav |"), allow_pipes=False)


def test_valid_data_dir_reads(tmp_path):
    data_dir = make_data_dir(tmp_path, "train", 5, "hi", texts=["नमस्ते दुनिया"])
    data = read_data_dir(data_dir, require_text=True)
    assert len(data.utterances) == 5 and data.utterances[0].language == "hi"
    assert data.utterances[0].text == "नमस्ते दुनिया"


def _break(data_dir, name, transform):
    path = data_dir / name
    path.write_bytes(transform(path.read_bytes()))


@pytest.mark.parametrize(
    "name,transform,message,kept",
    [
        ("wav.scp", lambda b: b"\n".join(reversed(b.strip().split(b"\n"))) + b"\n", "wav.scp:2: not sorted", 4),
        ("text", lambda b: b + b.split(b"\n")[0] + b"\n", "text:5: duplicate id", 3),
        ("text", lambda b: b.replace(b"\n", b"\r\n", 1), "text:1: CRLF", 4),
        ("text", lambda b: b.replace("दुनिया".encode(), b"\xff\xfe", 1), "text:1: not valid UTF-8", 3),
        ("utt2spk", lambda b: b"\n".join(b.strip().split(b"\n")[1:]) + b"\n",
         "is in wav.scp, text, utt2lang but not here", 3),
        ("text", lambda b: b.replace("नमस्ते दुनिया".encode(), b"", 1), "text:1: empty transcript", 3),
    ],
)
def test_data_dir_problems_name_file_and_line_and_fix_drops_them(tmp_path, name, transform, message, kept):
    data_dir = make_data_dir(tmp_path, "train", 4, "hi", texts=["नमस्ते दुनिया"])
    _break(data_dir, name, transform)
    with pytest.raises(DataDirError, match=message):
        read_data_dir(data_dir)
    fixed = read_data_dir(data_dir, fix=True)
    assert fixed.problems
    assert len(fixed.utterances) == kept and fixed.dropped == 4 - kept


def test_missing_audio_is_reported(tmp_path):
    data_dir = make_data_dir(tmp_path, "train", 3, "hi")
    next((tmp_path / "wav" / "train").glob("*.wav")).unlink()
    with pytest.raises(DataDirError, match="audio file not found"):
        read_data_dir(data_dir)
    assert len(read_data_dir(data_dir, fix=True).utterances) == 2


def test_validate_cli_reports_and_fix_rewrites_a_valid_dir(tmp_path, capsys):
    from seqattn.cli.main import main as cli_main

    data_dir = make_data_dir(tmp_path, "train", 5, "hi", texts=["नमस्ते दुनिया"])
    assert cli_main(["validate-data-dir", str(data_dir)]) == 0
    _break(data_dir, "text", lambda b: b.replace(b"\n", b"\r\n", 1) + b.split(b"\n")[2] + b"\n")  # CRLF + dup
    next((tmp_path / "wav" / "train").glob("*-0004.wav")).unlink()  # missing audio
    capsys.readouterr()
    assert cli_main(["validate-data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert "text:1: CRLF" in err and "text:6: duplicate id" in err
    assert re.search(r"wav\.scp:\d: audio file not found: .*-0004\.wav", err)
    assert cli_main(["validate-data-dir", str(data_dir), "--fix"]) == 0
    assert "dropped 2 utterance(s), kept 3" in capsys.readouterr().out
    assert (data_dir / ".backup" / "text").read_bytes().count(b"\r\n") == 1  # originals kept
    fixed = read_data_dir(data_dir, require_text=True)  # now valid: sorted, consistent, spk2utt rebuilt
    assert len(fixed.utterances) == 3
    assert len((data_dir / "spk2utt").read_text().split()) == 3 + len({u.speaker for u in fixed.utterances})


def test_fix_keeps_segments_layout(tmp_path):
    from seqattn.data.kaldi import fix_data_dir

    rec = tmp_path / "rec.wav"
    _wav(rec, seconds=3.0)
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"r1 {rec}\nr2 {tmp_path / 'gone.wav'}\n")
    (data / "segments").write_text("a r1 0.0 1.0\nb r1 1.0 2.5\nc r2 0 1\nd r1 2.0 1.0\n")
    (data / "utt2spk").write_text("a s\nb s\nc s\nd s\n")
    (data / "text").write_text("a x\nb y\nc z\nd w\n")
    result = fix_data_dir(data)
    assert result.dropped == 2  # c: its recording is missing; d: ends before it starts
    assert (data / "segments").read_text() == "a r1 0.00 1.00\nb r1 1.00 2.50\n"
    assert (data / "wav.scp").read_text() == f"r1 {rec}\n"
    assert [u.utt_id for u in read_data_dir(data).utterances] == ["a", "b"]


def test_manifests(tmp_path):
    for i in range(2):
        _wav(tmp_path / f"u{i}.wav")
    (tmp_path / "train.tsv").write_text(f"{tmp_path}\nu0.wav\t8000\nu1.wav\t8000\n")
    (tmp_path / "train.ltr").write_text("H I | T H E R E |\nB Y E |\n")
    utts = read_fairseq_manifest(tmp_path / "train.tsv")
    assert [u.text for u in utts] == ["HI THERE", "BYE"]
    lines = [json.dumps({"audio_filepath": "u0.wav", "text": "hello", "duration": 0.5}), "{bad json"]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataDirError, match="m.jsonl:2: invalid JSON"):
        read_jsonl_manifest(tmp_path / "m.jsonl")
    (tmp_path / "m.jsonl").write_text(lines[0] + "\n")
    (utt,) = read_jsonl_manifest(tmp_path / "m.jsonl")
    assert audio_duration(utt.source) == pytest.approx(0.5, abs=1e-3)


def test_language_probabilities_follow_the_temperature_formula():
    hours = {"hi": 90.0, "ta": 9.0, "ml": 1.0}
    probs = language_probabilities(hours, 0.7)
    raw = {k: (v / 100) ** 0.7 for k, v in hours.items()}
    for lang in hours:
        assert probs[lang] == pytest.approx(raw[lang] / sum(raw.values()))
    assert language_probabilities(hours, 1.0)["hi"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="alpha"):
        language_probabilities(hours, 0.0)


def test_temperature_epoch_upsamples_small_languages():
    languages = ["hi"] * 90 + ["ml"] * 10
    durations = [1.0] * 100
    epoch = temperature_epoch(languages, durations, 0.5, torch.Generator().manual_seed(0))
    share = sum(languages[i] == "ml" for i in epoch) / len(epoch)
    expected = 0.1**0.5 / (0.1**0.5 + 0.9**0.5)
    assert share == pytest.approx(expected, abs=0.02)


def test_duration_batches_respect_the_budget():
    sizes = [int(s) for s in torch.randint(1000, 20000, (200,))]
    batches = duration_batches(list(range(200)), sizes, 50000, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(200))
    assert all(len(b) * max(sizes[i] for i in b) <= 50000 for b in batches)


def test_shortest_first_epoch_orders_batches_by_length_and_keeps_every_item():
    """SortaGrad: the same batches as a shuffled epoch (the same items, the same budget), shortest first;
    the dataset's finetune switch turns it on only for the first epochs."""
    sizes = [int(s) for s in torch.randint(1000, 20000, (120,), generator=torch.Generator().manual_seed(3))]
    items = [LabelledItem(f"u{i}", None, None, size, "a", [1]) for i, size in enumerate(sizes)]
    shuffled = PaddedBatches(items, 0, 0, 40000, 16000, False)
    ordered = PaddedBatches(items, 0, 0, 40000, 16000, False, shortest_first=True)
    longest = [max(sizes[i] for i in batch) for batch in ordered.batches]
    assert longest == sorted(longest)
    assert longest != [max(sizes[i] for i in batch) for batch in shuffled.batches]  # the shuffled one is not sorted
    assert sorted(map(sorted, ordered.batches)) == sorted(map(sorted, shuffled.batches))


def test_validate_cli_checks_every_dir_it_is_given_and_fails_if_any_is_invalid(tmp_path, capsys):
    """One process for many dirs (the recipes validate dozens): a broken dir in the middle is reported with
    its file and line, the dirs after it are still checked, and the exit status says something failed."""
    from seqattn.cli.main import main as cli_main

    dirs = [make_data_dir(tmp_path, name, 3, "hi", texts=["नमस्ते दुनिया"]) for name in ("a", "b", "c")]
    assert cli_main(["validate-data-dir", *map(str, dirs)]) == 0
    assert capsys.readouterr().out.count("valid, 3 utterances") == 3
    _break(dirs[1], "text", lambda b: b.replace(b"\n", b"\r\n", 1))
    assert cli_main(["validate-data-dir", *map(str, dirs)]) == 1
    captured = capsys.readouterr()
    assert f"{dirs[0]}: valid" in captured.out and f"{dirs[2]}: valid" in captured.out
    assert "text:1: CRLF" in captured.err and "1 of 3 data dirs are invalid" in captured.err
