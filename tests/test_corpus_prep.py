"""Data prep of the real-corpus recipes, on tiny corpora built here with each corpus's real directory and file
layout and transcripts in the real scripts (the corpora themselves cannot be downloaded in CI)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from audio_fixtures import tone_wave

from seqattn.data.kaldi import read_data_dir

REPO = Path(__file__).resolve().parents[1]
MUCS = {  # language -> transcripts in its script
    "Hindi": ["मैं घर जा रहा हूँ", "आज मौसम अच्छा है", "यह किताब मेरी है", "वह स्कूल गया"],
    "Odia": ["ମୁଁ ଘରକୁ ଯାଉଛି", "ଆଜି ପାଗ ଭଲ ଅଛି", "ଏହା ମୋର ବହି", "ସେ ସ୍କୁଲ ଗଲା"],
}
FLEURS = {
    "ta_in": ["நான் வீட்டுக்குப் போகிறேன்", "இன்று வானிலை நன்றாக இருக்கிறது", "இது என் புத்தகம்"],
    "hi_in": ["मैं घर जा रहा हूँ", "आज मौसम अच्छा है", "यह किताब मेरी है"],
}


def _wav(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone_wave(0.5, 16000, np.random.default_rng(seed)), 16000, subtype="PCM_16")


def _run(script, *args):
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_mucs2021_layout_to_kaldi_dirs(tmp_path):
    corpus = tmp_path / "mucs"
    opaque_ids = np.random.default_rng(7).choice(10**8 - 1, size=100, replace=False)  # MUCS ids are opaque numbers
    for language, texts in MUCS.items():
        for split in ("train", "test"):
            rows = []
            for i in range(12 if split == "train" else 3):
                utt = f"{opaque_ids[i if split == 'train' else 50 + i]:08d}"
                _wav(corpus / language / split / "audio" / f"{utt}.wav", i)
                rows.append(f"{utt} {texts[i % len(texts)]}")
            rows.append("99999999 " + texts[0])  # audio missing: reported, left out
            (corpus / language / split / "transcription.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "data"
    err = _run(REPO / "egs/mucs2021/asr/local/prepare_mucs.py", "--corpus", str(corpus), "--langs", "Hindi,Odia",
               "--out", str(out), "--dev-fraction", "0.25")
    assert "transcription.txt:13: audio" in err and "4 utterance(s) left out" in err
    dev_ids = {}
    for code, texts in (("hi", MUCS["Hindi"]), ("or", MUCS["Odia"])):
        train, dev, test = (read_data_dir(out / f"{s}_{code}", require_text=True) for s in ("train", "dev", "test"))
        dev_ids[code] = {u.utt_id for u in dev.utterances}
        assert len(train.utterances) == 9 and len(dev.utterances) == 3 and len(test.utterances) == 3  # 0.25 x 12
        assert not {u.utt_id for u in dev.utterances} & {u.utt_id for u in train.utterances}
        assert {u.text for u in train.utterances + dev.utterances} <= set(texts)
        assert all(u.language == code and u.utt_id.startswith(f"{code}-") for u in train.utterances)
    # A small fraction of a small corpus still holds one utterance out, and the split does not change between runs.
    again = tmp_path / "again"
    _run(REPO / "egs/mucs2021/asr/local/prepare_mucs.py", "--corpus", str(corpus), "--langs", "Hindi",
         "--out", str(again), "--dev-fraction", "0.01")
    small_dev = read_data_dir(again / "dev_hi", require_text=True).utterances
    assert len(small_dev) == 1 and small_dev[0].utt_id in dev_ids["hi"]


def test_fleurs_layout_to_kaldi_dirs(tmp_path):
    corpus = tmp_path / "fleurs"
    for config, texts in FLEURS.items():
        for split in ("train", "dev", "test"):
            lines = []
            for i, text in enumerate(texts):
                for take in range(2):  # FLEURS has several readings of each sentence
                    name = f"{1000 + 10 * i + take}{split}.wav"
                    _wav(corpus / config / "audio" / split / name, i)
                    chars = " ".join(text.replace(" ", "|"))
                    lines.append("\t".join([str(i), name, text + "।", text, chars, "8000", "FEMALE"]))
            lines.append("9\tmissing.wav\tx\tx\tx\t1\tMALE")
            lines.append("only\tthree\tfields")
            (corpus / config / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "data"
    err = _run(REPO / "egs/fleurs/asr/local/prepare_fleurs.py", "--corpus", str(corpus), "--configs",
               "ta_in,hi_in", "--out", str(out))
    assert "train.tsv:7: audio" in err and "train.tsv:8: expected 7 tab-separated fields" in err
    for config, texts in FLEURS.items():
        code = config.split("_")[0]
        for split in ("train", "dev", "test"):
            data = read_data_dir(out / f"{split}_{code}", require_text=True)
            assert len(data.utterances) == 2 * len(texts)
            assert sorted({u.text for u in data.utterances}) == sorted(texts)  # normalised column, no danda
        assert (out / f"train_{code}" / "utt2gender").read_text().split()[1] == "female"


def test_fleurs_from_hf_datasets_through_the_recipe(tmp_path):
    """egs/fleurs with --hf-data: FLEURS held as HF datasets (FLEURS's columns, audio stored as bytes, one
    unreadable row) becomes validated Kaldi dirs through run.sh's stage 1, with no download stage."""
    import io
    import os

    datasets = __import__("pytest").importorskip("datasets", reason="needs the datasets extra")
    hf_data = tmp_path / "fleurs_hf"
    configs = {"hi_in": FLEURS["hi_in"]}
    for config, texts in configs.items():
        splits = {}
        for split in ("train", "validation", "test"):
            rows = {"id": [], "audio": [], "transcription": [], "gender": [], "language": []}
            for i, text in enumerate(texts):
                for take in range(2):
                    buffer = io.BytesIO()
                    sf.write(buffer, tone_wave(0.5, 16000, np.random.default_rng(10 * i + take)), 16000, format="WAV")
                    rows["id"].append(i)
                    rows["audio"].append({"bytes": buffer.getvalue(), "path": None})
                    rows["transcription"].append(text)
                    rows["gender"].append("FEMALE" if take else "MALE")
                    rows["language"].append(config)
            rows["id"].append(99)  # an unreadable recording: reported, left out
            rows["audio"].append({"bytes": b"RIFF broken", "path": None})
            rows["transcription"].append("x")
            rows["gender"].append("MALE")
            rows["language"].append(config)
            splits[split] = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio())
        datasets.DatasetDict(splits).save_to_disk(hf_data / config)
    import shutil

    recipe = tmp_path / "egs" / "fleurs" / "asr"  # run.sh writes data/ beside itself: run a copy
    shutil.copytree(REPO / "egs" / "fleurs" / "asr", recipe)
    (tmp_path / "egs" / "indic_synth").symlink_to(REPO / "egs" / "indic_synth")  # the shared later stages
    (recipe / "path.sh").write_text(f"export SEQATTN_ROOT={REPO}\nexport PATH={Path(sys.executable).parent}:$PATH\n"
                                    f"export PYTHONPATH={REPO}\n")
    done = subprocess.run(["bash", str(recipe / "run.sh"), "--hf-data", str(hf_data), "--configs", "hi_in",
                           "--stop-stage", "1"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stage 0" not in done.stdout and "cannot decode audio" in done.stderr
    for config, texts in configs.items():
        code = config.split("_")[0]
        for split in ("train", "dev", "test"):
            data = read_data_dir(recipe / "data" / f"{split}_{code}", require_text=True)
            assert len(data.utterances) == 2 * len(texts)
            assert sorted({u.text for u in data.utterances}) == sorted(texts)
            assert all(Path(u.source.location).suffix == ".flac" for u in data.utterances)
        genders = (recipe / "data" / f"train_{code}" / "utt2gender").read_text().split()[1::2]
        assert sorted(set(genders)) == ["female", "male"]


def _subset_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("subset_data_dir",
                                                  REPO / "egs/indic_synth/asr/local/subset_data_dir.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_subset_data_dir_keeps_each_voices_share_spread_over_its_utterances(tmp_path):
    """--label-fraction's subsets: per speaker floor(n * fraction) utterances, evenly spread, every file
    consistent; with segments, wav.scp keeps only the recordings still used."""
    subset = _subset_module()
    source = tmp_path / "src"
    source.mkdir()
    utts = [(f"{spk}-{i:02d}", spk) for spk, n in (("a", 7), ("b", 10)) for i in range(n)]
    (source / "wav.scp").write_text("".join(f"rec{i % 4} /audio/rec{i % 4}.wav\n" for i in range(4)))
    (source / "segments").write_text("".join(f"{u} rec{i % 4} {i}.00 {i + 1}.00\n" for i, (u, _) in enumerate(utts)))
    (source / "text").write_text("".join(f"{u} words {i}\n" for i, (u, _) in enumerate(utts)))
    (source / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utts))
    (source / "spk2utt").write_text("a " + " ".join(u for u, s in utts if s == "a") + "\nb "
                                    + " ".join(u for u, s in utts if s == "b") + "\n")
    assert subset.subset(source, tmp_path / "out", 0.3) == 2 + 3
    out = read_data_dir(tmp_path / "out", check_audio=False)
    kept = [u.utt_id for u in out.utterances]
    assert kept == ["a-03", "a-06", "b-03", "b-06", "b-09"]  # spread over each voice, not its first ones
    assert {u.text for u in out.utterances} == {"words 3", "words 6", "words 10", "words 13", "words 16"}
    used = {line.split()[1] for line in (tmp_path / "out" / "segments").read_text().splitlines()}
    assert {line.split()[0] for line in (tmp_path / "out" / "wav.scp").read_text().splitlines()} == used
    assert subset.subset(source, tmp_path / "all", 1.0) == len(utts)
    assert len(subset.kept_utterances({"x": [f"u{i}" for i in range(500)]}, 0.1)) == 50
