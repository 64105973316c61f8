"""Hostile and broken inputs: the audio loader and `seqattn transcribe`, Kaldi data dirs and manifests, and
eval-lm. Every input ends transcribed or listed as failed with a reason; no traceback, no hang."""
import io
import json
import struct
import time
import wave

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import make_data_dir, tone_wave
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqattn.cli.main import main as cli_main
from seqattn.data.audio import AudioError, load_audio
from seqattn.data.kaldi import DataDirError, read_data_dir
from seqattn.data.manifest import read_jsonl_manifest
from seqattn.data.text import CharVocabulary
from seqattn.models.io import save_model
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, tiny
from seqattn.nn import AttentionConfig
from seqattn.nn.heads import LocalHeads

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def hostile_inputs(root):
    """name -> path: every kind of broken or unusual input the issue lists (and a few good ones)."""
    rng = np.random.default_rng(0)
    speech = (tone_wave(1.0, 16000, rng) * 20000).astype(np.int16)
    good = wav_bytes(speech, 16000)
    files = {
        "random.wav": rng.bytes(3000),
        "random.flac": rng.bytes(3000),
        "truncated.wav": good[: len(good) // 3],
        "header_only.wav": good[:44],
        "zero_length.wav": b"",
        "zero_length.flac": b"",
        "wrong_header.wav": b"RIFX" + good[4:],
        "flac_named_wav.wav": b"fLaC" + rng.bytes(500),
        "rate_1hz.wav": good[:24] + struct.pack("<I", 1) + good[28:],
        "rate_4ghz.wav": good[:24] + struct.pack("<I", 4_000_000_000) + good[28:],
        "one_sample.wav": wav_bytes(speech[:1], 16000),
        "eight_channels.wav": wav_bytes(np.repeat(speech[:, None], 8, 1), 16000, channels=8),
        "rate_8k.wav": wav_bytes(speech[::2], 8000),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = root / name
        paths[name].write_bytes(data)
    nan = tone_wave(1.0, 16000, rng)
    nan[100] = np.nan
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    paths["nan.wav"] = root / "nan.wav"
    inf = tone_wave(1.0, 16000, rng)
    inf[200] = np.inf
    sf.write(root / "inf.wav", inf, 16000, subtype="FLOAT")
    paths["inf.wav"] = root / "inf.wav"
    sf.write(root / "rate_48k.wav", tone_wave(1.0, 48000, rng), 48000)
    paths["rate_48k.wav"] = root / "rate_48k.wav"
    (root / "folder.wav").mkdir()
    paths["folder.wav"] = root / "folder.wav"
    (root / "dangling.wav").symlink_to(root / "nowhere.wav")
    paths["dangling.wav"] = root / "dangling.wav"
    return paths


EXPECTED_GOOD = {"one_sample.wav", "eight_channels.wav", "rate_8k.wav", "rate_48k.wav"}


def test_every_hostile_file_loads_or_fails_with_a_reason_naming_it(tmp_path):
    for name, path in hostile_inputs(tmp_path).items():
        try:
            wave_ = load_audio(str(path))
        except AudioError as error:
            assert name in str(error) and name not in EXPECTED_GOOD, (name, error)
            continue
        assert name in EXPECTED_GOOD, f"{name} loaded"
        assert wave_.dtype == torch.float32 and bool(torch.isfinite(wave_).all())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    vocab = CharVocabulary.build(["नमस्ते दुनिया"])
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(
        tiny(
            vocab_size=len(vocab),
            attention=AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=8, window_right=8)),
        )
    )
    return save_model(model, tmp_path_factory.mktemp("m") / "ctc", extra_files={"tokens.json": vocab.to_json()})


def test_transcribe_conserves_counts_over_hostile_inputs_and_pipes(model_dir, tmp_path, capsys):
    paths = hostile_inputs(tmp_path)
    data = tmp_path / "piped"
    data.mkdir()
    ok = tmp_path / "rate_48k.wav"
    rows = {
        "p1-fails": "false |",
        "p2-hangs": "sleep 30 |",
        "p3-garbage": "head -c 500 /dev/urandom |",
        "p4-good": f"cat {ok} |",
    }
    (data / "wav.scp").write_text("".join(f"{k} {v}\n" for k, v in sorted(rows.items())))
    (data / "utt2spk").write_text("".join(f"{k} s\n" for k in sorted(rows)))
    started = time.time()
    code = cli_main(
        [
            "transcribe",
            str(model_dir),
            *map(str, paths.values()),
            "--data-dir",
            str(data),
            "--pipe-timeout",
            "3",
            "--output-dir",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    elapsed = time.time() - started
    err = capsys.readouterr().err
    total = len(paths) + len(rows)
    transcribed = len(EXPECTED_GOOD) + 1
    assert code == 1 and elapsed < 30  # the hanging pipe is cut at --pipe-timeout
    assert f"transcribed {transcribed} of {total} inputs" in err
    failed = (tmp_path / "out" / "failed.txt").read_text().splitlines()
    assert len(failed) == total - transcribed and all("\t" in line or ":" in line for line in failed)
    assert "timed out after 3 s" in "\n".join(failed) and "exit 1" in "\n".join(failed)
    assert "Traceback" not in err


@SETTINGS
@given(st.binary(min_size=0, max_size=4096), st.sampled_from([".wav", ".flac", ".ogg", ".mp3"]))
def test_random_bytes_never_escape_as_anything_but_audio_error(tmp_path, data, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    try:
        wave_ = load_audio(str(path))
    except AudioError as error:
        assert str(path) in str(error)
    else:
        assert bool(torch.isfinite(wave_).all())


@SETTINGS
@given(st.binary(min_size=44, max_size=2000), st.integers(0, 2**32 - 1), st.integers(0, 65535))
def test_wav_headers_with_random_rates_and_channel_counts(tmp_path, body, rate, channels):
    header = bytearray(wav_bytes(np.zeros(8, dtype=np.int16), 16000))
    header[22:24] = struct.pack("<H", channels)
    header[24:28] = struct.pack("<I", rate)
    path = tmp_path / "h.wav"
    path.write_bytes(bytes(header[:44]) + body)
    try:
        wave_ = load_audio(str(path))
    except AudioError:
        return
    assert bool(torch.isfinite(wave_).all())


DATA_DIR_DAMAGE = {
    "duplicate id": ("wav.scp", lambda lines: lines + [lines[0]], "duplicate"),
    "unsorted": ("utt2spk", lambda lines: lines[::-1], "not sorted"),
    "missing column": ("utt2spk", lambda lines: [lines[0].split()[0]] + lines[1:], "utt2spk:1"),
    "CRLF": ("wav.scp", lambda lines: [lines[0] + "\r"] + lines[1:], "CRLF"),
    "BOM": ("text", lambda lines: ["\ufeff" + lines[0]] + lines[1:], "text:1"),
    "segment beyond the recording": (
        "segments",
        lambda lines: [lines[0].rsplit(" ", 1)[0] + " 99.0"] + lines[1:],
        "segments:1",
    ),
    "negative start": (
        "segments",
        lambda lines: [" ".join(lines[0].split()[:2] + ["-1.0", "0.5"])] + lines[1:],
        "segments:1",
    ),
}


def with_segments(data_dir):
    """Turn a data dir into recording + segments form (each utterance the first 0.5 s of its file)."""
    scp = (data_dir / "wav.scp").read_text().splitlines()
    (data_dir / "segments").write_text("".join(f"{line.split()[0]} rec-{line.split()[0]} 0.0 0.5\n" for line in scp))
    (data_dir / "wav.scp").write_text("".join(f"rec-{line.split()[0]} {line.split()[1]}\n" for line in scp))


@pytest.mark.parametrize("damage", list(DATA_DIR_DAMAGE))
def test_each_data_dir_defect_is_named_by_file_and_line_and_fix_reports_it(tmp_path, damage):
    name, transform, message = DATA_DIR_DAMAGE[damage]
    data_dir = make_data_dir(tmp_path, "d", 4, "hi", texts=["नमस्ते दुनिया"])
    if name == "segments":
        with_segments(data_dir)
    path = data_dir / name
    path.write_text("\n".join(transform(path.read_text(encoding="utf-8").splitlines())) + "\n", encoding="utf-8")
    with pytest.raises(DataDirError, match=message):
        read_data_dir(data_dir, require_text=True)
    fixed = read_data_dir(data_dir, require_text=True, fix=True)
    assert fixed.problems and len(fixed.utterances) + fixed.dropped >= 3


def test_non_utf8_text_is_named(tmp_path):
    data_dir = make_data_dir(tmp_path, "d", 3, "hi", texts=["नमस्ते दुनिया"])
    (data_dir / "text").write_bytes((data_dir / "text").read_bytes().replace("दुनिया".encode(), b"\xc3\x28", 1))
    with pytest.raises(DataDirError, match="text:1: not valid UTF-8"):
        read_data_dir(data_dir)


@SETTINGS
@given(
    st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40), max_size=8),
    st.sampled_from(["wav.scp", "text", "utt2spk", "segments", "utt2lang"]),
)
def test_random_data_dir_files_give_data_dir_errors_only(tmp_path_factory, lines, name):
    data_dir = make_data_dir(tmp_path_factory.mktemp("fuzz"), "d", 3, "hi", texts=["नमस्ते"])
    (data_dir / name).write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    try:
        read_data_dir(data_dir)
    except DataDirError as error:
        assert str(data_dir) in str(error)
    read_data_dir(data_dir, fix=True)  # --fix always produces a report, never an exception


@SETTINGS
@given(
    st.lists(
        st.one_of(
            st.text(max_size=60),
            st.builds(
                json.dumps,
                st.dictionaries(
                    st.sampled_from(["audio_filepath", "text", "duration", "language", "x"]),
                    st.one_of(st.text(max_size=10), st.floats(allow_nan=True), st.integers(), st.none()),
                ),
            ),
        ),
        max_size=6,
    )
)
def test_random_manifests_give_clear_errors_only(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("m") / "m.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        read_jsonl_manifest(path)
    except (ValueError, OSError) as error:
        assert str(path) in str(error) or "line" in str(error)


@pytest.mark.slow
def test_eval_lm_on_huge_lines_binary_and_empty_files(tmp_path, capsys):
    from seqattn.data.lm_tokenizers import ByteTokenizer, tokenizer_to_json
    from seqattn.models.lm import TransformerLM, presets

    model_dir = save_model(
        TransformerLM(presets.tiny(vocab_size=257)).eval(),
        tmp_path / "lm",
        extra_files={"tokenizer.json": tokenizer_to_json(ByteTokenizer())},
    )
    huge = tmp_path / "huge.txt"
    huge.write_text("word " * 200_000)  # one 1 MB line (test_huge_lines_are_cut_at_whitespace covers the cutting)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "binary.dat"
    binary.write_bytes(np.random.default_rng(0).bytes(10000))
    report = tmp_path / "r.json"
    code = cli_main(
        [
            "eval-lm",
            str(model_dir),
            str(huge),
            str(empty),
            str(binary),
            "--context",
            "64",
            "--batch-size",
            "64",
            "--json",
            str(report),
            "--quiet",
        ]
    )
    assert code == 1
    files = {f["name"].rsplit("/", 1)[-1]: f for f in json.loads(report.read_text())["files"]}
    assert files["huge.txt"]["tokens"] == 1_000_000 and files["huge.txt"]["words"] == 200_000
    assert files["empty.txt"]["error"] == "empty: no text to score"
    assert "invalid UTF-8 at byte" in files["binary.dat"]["error"]
    assert "Traceback" not in capsys.readouterr().err


def test_huge_lines_are_cut_at_whitespace(tmp_path):
    """A line far longer than the read size is cut at whitespace (else anywhere), never held whole twice."""
    from seqattn.evaluate.perplexity import text_chunks

    text = "word " * 10_000 + "x" * 9000 + "\nlast line\n"  # 50 kB of words, then 9 kB without whitespace
    path = tmp_path / "huge.txt"
    path.write_text(text)
    pieces = list(text_chunks(path, chunk_bytes=1000))
    assert "".join(pieces) == text and len(pieces) > 5
    assert all(piece.endswith((" ", "\n", "x")) for piece in pieces)
    assert max(len(piece) for piece in pieces) <= 5 * 1000 + 9000
