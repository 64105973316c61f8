"""End to end on real synthetic speech: train a small CTC model (the demo's filterbank front end) on espeak-ng
Hindi, transcribe held-out speakers through the CLI, and check the CER falls far below an untrained model's;
parse every output format back."""
import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from seqattn.cli.main import main as cli_main
from seqattn.data.text import CharVocabulary
from seqattn.models.io import save_model
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC
from seqattn.train.config_io import load_config
from seqattn.train.finetune import FinetuneConfig, model_config_for, train

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng is not installed (tools/install_system_deps.sh installs it)")]
REPO = Path(__file__).resolve().parents[1]
WORDS = ["एक", "दो", "तीन", "चार", "पाँच", "छह", "सात", "आठ"]  # Hindi number words: 8 words, 19 characters


def _speak(text, voice, rate, pitch, path):
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(raw), text],
                   check=True, capture_output=True)
    audio, sample_rate = sf.read(raw, dtype="float32")
    raw.unlink()
    sf.write(path, AF.resample(torch.from_numpy(audio), sample_rate, 16000).numpy(), 16000, subtype="PCM_16")


def _data_dir(root, name, count, variants, seed):
    rng = random.Random(seed)
    wav_dir, data_dir = root / "wav" / name, root / name
    wav_dir.mkdir(parents=True)
    data_dir.mkdir()
    rows = []
    for i in range(count):
        text = " ".join(rng.choices(WORDS, k=rng.randint(1, 3)))
        variant = rng.choice(variants)
        utt = f"hi-{variant}-{name}-{i:04d}"
        _speak(text, f"hi+{variant}", rng.randint(140, 180), rng.randint(35, 65), wav_dir / f"{utt}.wav")
        rows.append((utt, wav_dir / f"{utt}.wav", text, f"hi-{variant}"))
    rows.sort()
    (data_dir / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p, _, _ in rows))
    (data_dir / "text").write_text("".join(f"{u} {t}\n" for u, _, t, _ in rows), encoding="utf-8")
    (data_dir / "utt2spk").write_text("".join(f"{u} {s}\n" for u, _, _, s in rows))
    return data_dir


def _cer(out_dir):
    line = (out_dir / "wer").read_text().splitlines()[1]
    return float(re.match(r"%CER ([\d.]+)", line).group(1))


def test_finetune_then_transcribe_held_out_speakers(tmp_path, capsys):
    train_dir = _data_dir(tmp_path, "train", 160, ["m1", "m2", "m3", "f1", "f2"], seed=1)
    test_dir = _data_dir(tmp_path, "test", 12, ["m5", "f4"], seed=2)  # speakers never seen in training
    config = load_config(FinetuneConfig, str(REPO / "recipes" / "wav2vec2" / "finetune_e2e_test.yaml"), [
        f"data.train=[{{path: {train_dir}}}]", f"run.output_dir={tmp_path / 'ft'}"])
    best = train(config)

    untrained_dir = tmp_path / "untrained"
    vocab = CharVocabulary.load(best / "tokens.json")
    torch.manual_seed(0)
    untrained = Wav2Vec2ForCTC(model_config_for(config, len(vocab)))
    save_model(untrained, untrained_dir, extra_files={"tokens.json": vocab.to_json()})

    outputs = {}
    for name, model_dir in (("trained", best), ("untrained", untrained_dir)):
        out = tmp_path / f"out_{name}"
        assert cli_main(["transcribe", str(model_dir), "--data-dir", str(test_dir), "--output-dir", str(out),
                         "--output-format", "all", "--quiet", "--batch-size", "4"]) == 0
        outputs[name] = out
    trained_cer, untrained_cer = _cer(outputs["trained"]), _cer(outputs["untrained"])
    print(f"held-out CER: trained {trained_cer:.1f}%, untrained {untrained_cer:.1f}%")
    assert untrained_cer >= 90.0
    assert trained_cer <= 40.0 and trained_cer <= untrained_cer / 2

    out = outputs["trained"]
    for wav in sorted((tmp_path / "wav" / "test").glob("*.wav")):
        utt, duration = wav.stem, sf.info(wav).duration
        data = json.loads((out / f"{utt}.json").read_text(encoding="utf-8"))
        assert data["duration"] == pytest.approx(duration, abs=0.01)
        words = data["words"]
        assert [w["word"] for w in words] == data["text"].split()
        assert all(0 <= w["start"] < w["end"] <= duration + 0.02 for w in words)
        assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(words, words[1:]))  # monotonic, no overlap
        assert all(0.0 <= w["confidence"] <= 1.0 for w in words)
        ctm = [line.split() for line in (out / f"{utt}.ctm").read_text(encoding="utf-8").splitlines()]
        assert [row[4] for row in ctm] == data["text"].split()
        assert all(row[0] == utt and float(row[2]) == pytest.approx(w["start"], abs=0.01)
                   for row, w in zip(ctm, words))
        srt = (out / f"{utt}.srt").read_text(encoding="utf-8")
        if data["text"]:
            times = re.findall(r"(\d\d):(\d\d):(\d\d),(\d\d\d) --> (\d\d):(\d\d):(\d\d),(\d\d\d)", srt)
            spans = [(int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000,
                      int(h2) * 3600 + int(m2) * 60 + int(s2) + int(ms2) / 1000)
                     for h, m, s, ms, h2, m2, s2, ms2 in times]
            assert spans and all(0 <= a < b <= duration + 0.02 for a, b in spans)
            assert data["text"].split()[0] in srt
        assert (out / f"{utt}.vtt").read_text(encoding="utf-8").startswith("WEBVTT")
        assert (out / f"{utt}.txt").read_text(encoding="utf-8").strip() == data["text"]
