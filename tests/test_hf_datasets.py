"""HF ``datasets`` as input to every command, built offline with ``datasets`` itself.

The same audio is written as a Kaldi data dir and as a dataset (``save_to_disk`` with embedded bytes, and
parquet files that refer to the wav files): training, transcription, analysis and LM scoring must give the
same results from either.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

datasets = pytest.importorskip("datasets", reason="needs the datasets extra: pip install 'seqattn[datasets]'")

from audio_fixtures import make_data_dir

from seqattn.cli.main import main as cli_main
from seqattn.data.audio import AudioError, audio_duration, load_audio
from seqattn.data.hf_datasets import DatasetSpecError, is_dataset_spec, read_dataset
from seqattn.data.kaldi import read_data_dir
from seqattn.data.lm_tokenizers import ByteTokenizer, tokenizer_to_json
from seqattn.models.io import save_model
from seqattn.models.lm import TransformerLM
from seqattn.models.lm import presets as lm_presets
from seqattn.models.wav2vec2 import Wav2Vec2ForPretraining, tiny
from seqattn.train.config_io import load_config
from seqattn.train.finetune import FinetuneConfig
from seqattn.train.finetune import train as finetune
from seqattn.train.pretrain import PretrainConfig
from seqattn.train.pretrain import train as pretrain

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["नमस्ते दुनिया", "भारत देश", "हिंदी भाषा", "नमस्ते भारत"]


def _as_dataset(data_dirs: list[Path], embed: bool):
    """The utterances of Kaldi data dirs as one dataset, rows in utterance-id order, with an Audio feature,
    the transcript as ``transcription`` and the language as a ClassLabel ``lang_id`` (FLEURS's layout)."""
    rows = {"id": [], "audio": [], "transcription": [], "lang_id": []}
    languages = sorted({d.name.split("_")[-1] for d in data_dirs})
    utterances = sorted((u for d in data_dirs for u in read_data_dir(d).utterances), key=lambda u: u.utt_id)
    for utt in utterances:
        location = utt.source.location
        rows["id"].append(utt.utt_id)
        rows["audio"].append({"bytes": Path(location).read_bytes(), "path": None} if embed
                             else {"bytes": None, "path": location})
        rows["transcription"].append(utt.text or "")
        rows["lang_id"].append(languages.index(utt.language))
    # cast after building: encoding through the Audio feature at construction would need torchcodec
    table = datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio())
    return table.cast_column("lang_id", datasets.ClassLabel(names=languages))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    hi = make_data_dir(root, "train_hi", 6, "hi", seconds=(1.0, 1.4), seed=1, texts=TEXTS)
    ta = make_data_dir(root, "train_ta", 6, "ta", seconds=(1.0, 1.4), seed=2, texts=TEXTS)
    dev = make_data_dir(root, "dev_hi", 3, "hi", seconds=(1.0, 1.4), seed=3, texts=TEXTS)
    train = _as_dataset([hi, ta], embed=True)
    datasets.DatasetDict({"train": train, "validation": _as_dataset([dev], embed=True)}).save_to_disk(root / "saved")
    (root / "parquet").mkdir()
    _as_dataset([hi, ta], embed=False).to_parquet(str(root / "parquet" / "train-00000-of-00001.parquet"))
    return {"root": root, "hi": hi, "ta": ta, "dev": dev, "saved": root / "saved",
            "parquet": root / "parquet" / "train-00000-of-00001.parquet"}


def test_specs_are_recognised_and_rows_read_like_the_data_dirs(corpus):
    assert is_dataset_spec(corpus["saved"]) and is_dataset_spec(f"{corpus['saved']}?split=train")
    assert is_dataset_spec(corpus["parquet"]) and is_dataset_spec(corpus["root"] / "parquet")
    assert not is_dataset_spec(corpus["hi"])  # a Kaldi data dir stays one
    kaldi = sorted((u for d in (corpus["hi"], corpus["ta"]) for u in read_data_dir(d).utterances),
                   key=lambda u: u.utt_id)
    for spec in (f"{corpus['saved']}?split=train", str(corpus["parquet"]), f"{corpus['root'] / 'parquet'}"):
        rows = read_dataset(spec)
        assert [u.utt_id for u in rows] == [u.utt_id for u in kaldi]
        assert [u.text for u in rows] == [u.text for u in kaldi]
        assert [u.language for u in rows] == [u.language for u in kaldi]  # ClassLabel ids give their names
        for row, utt in zip(rows[:3], kaldi[:3]):
            assert audio_duration(row.source) == pytest.approx(audio_duration(utt.source))
            torch.testing.assert_close(load_audio(row.source), load_audio(utt.source))


def test_bad_specs_and_rows_are_clear_errors(corpus, tmp_path):
    with pytest.raises(DatasetSpecError, match="holds splits train, validation; choose one with"):
        read_dataset(str(corpus["saved"]))
    with pytest.raises(DatasetSpecError, match="has no split 'test'"):
        read_dataset(f"{corpus['saved']}?split=test")
    with pytest.raises(DatasetSpecError, match="no text column 'words'"):
        read_dataset(f"{corpus['saved']}?split=train&text=words")
    with pytest.raises(DatasetSpecError, match="unknown dataset option"):
        read_dataset(f"{corpus['saved']}?spilt=train")
    with pytest.raises(DatasetSpecError, match="no such dataset file"):
        read_dataset(str(tmp_path / "missing.parquet"))
    sf.write(tmp_path / "gone.wav", np.zeros(1600, dtype=np.float32), 16000)  # there when written, gone when read
    broken = datasets.Dataset.from_dict({"audio": [{"bytes": b"RIFF junk", "path": None},
                                                   {"bytes": None, "path": str(tmp_path / "gone.wav")}],
                                         "text": ["a", "b"]}).cast_column("audio", datasets.Audio())
    broken.to_parquet(str(tmp_path / "broken.parquet"))  # parquet keeps the path (save_to_disk would embed it)
    (tmp_path / "gone.wav").unlink()
    rows = read_dataset(str(tmp_path / "broken.parquet"))
    with pytest.raises(AudioError, match=r"broken.parquet row 0 \('audio'\): cannot decode audio"):
        load_audio(rows[0].source)
    with pytest.raises(AudioError, match="row 1.*gone.wav does not exist"):
        audio_duration(rows[1].source)


def test_pretraining_from_a_dataset_equals_pretraining_from_the_data_dirs(corpus, tmp_path):
    common = ["data.max_sample_size=16000", "data.min_sample_size=4000", "data.max_tokens=64000",
              "optim.warmup_updates=2", "optim.max_updates=3", "run.log_every=1", "run.save_every=3",
              "run.tensorboard=false"]
    recipe = str(REPO / "recipes" / "wav2vec2" / "pretrain_tiny.yaml")
    kaldi = f"data.train=[{{path: {corpus['hi']}, language: hi}}, {{path: {corpus['ta']}, language: ta}}]"
    from_dirs = pretrain(load_config(PretrainConfig, recipe, [kaldi, f"run.output_dir={tmp_path / 'a'}", *common]))
    hf = f"data.train=[{{path: {corpus['saved']}, split: train, language_column: lang_id}}]"
    from_hf = pretrain(load_config(PretrainConfig, recipe, [hf, f"run.output_dir={tmp_path / 'b'}", *common]))
    a, b = load_file(str(from_dirs / "model.safetensors")), load_file(str(from_hf / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)
    assert "utterances per language" in (tmp_path / "b" / "train.log").read_text()


def test_finetune_transcribe_analyze_from_a_dataset(corpus, tmp_path, capsys):
    torch.manual_seed(0)
    pretrained = save_model(Wav2Vec2ForPretraining(tiny()), tmp_path / "pretrained")
    recipe = str(REPO / "recipes" / "wav2vec2" / "finetune_tiny.yaml")
    best = finetune(load_config(FinetuneConfig, recipe, [
        f"init={pretrained}", f"data.train=[{{path: '{corpus['parquet']}?text=transcription'}}]",
        f"data.valid=[{{path: {corpus['saved']}, split: validation}}]", f"run.output_dir={tmp_path / 'ft'}",
        "data.max_tokens=48000", "optim.max_updates=2", "validate_every=2", "run.log_every=1", "run.save_every=2",
        "freeze_updates=1", "run.tensorboard=false"]))
    log = (tmp_path / "ft" / "train.log").read_text(encoding="utf-8")
    assert "12 training and 3 validation utterances" in log and "valid update 2: wer=" in log
    # transcribe the validation split (positional) and the dev data dir: the same transcripts and scores
    capsys.readouterr()
    outputs = {}
    for name, args in (("hf", [f"{corpus['saved']}?split=validation"]), ("kaldi", ["--data-dir", str(corpus["dev"])])):
        assert cli_main(["transcribe", str(best), *args, "--output-dir", str(tmp_path / name), "--quiet"]) == 0
        printed = capsys.readouterr().out
        assert "%WER" in printed and "%CER" in printed
        hypotheses = (tmp_path / name / "text").read_text(encoding="utf-8").splitlines()
        outputs[name] = (printed, [line.split(maxsplit=1)[1:] for line in hypotheses])
    assert outputs["hf"] == outputs["kaldi"]
    # a dataset input that cannot be read is one failed input; the others are transcribed
    code = cli_main(["transcribe", str(best), f"{corpus['saved']}?split=nope", f"{corpus['saved']}?split=validation",
                     "--output-dir", str(tmp_path / "mixed"), "--quiet"])
    assert code == 1 and "has no split 'nope'" in capsys.readouterr().err
    assert len((tmp_path / "mixed" / "text").read_text(encoding="utf-8").splitlines()) == 3
    out = tmp_path / "analysis"
    assert cli_main(["analyze", "attention", str(best), f"{corpus['saved']}?split=train&language=lang_id",
                     "--out-dir", str(out), "--quiet", "--plot-format", "png"]) == 0
    values = json.loads((out / "attention.json").read_text())
    assert values["utterances"] == 12 and not values["failures"]


def test_eval_lm_scores_a_text_dataset_like_the_same_text_file(tmp_path, capsys):
    lines = [f"line {i}: the quick brown fox {i % 5}" for i in range(40)]
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    datasets.Dataset.from_dict({"text": lines}).to_parquet(str(tmp_path / "test.parquet"))
    torch.manual_seed(0)
    model_dir = save_model(TransformerLM(lm_presets.tiny(vocab_size=257)), tmp_path / "lm",
                           extra_files={"tokenizer.json": tokenizer_to_json(ByteTokenizer())})
    report = tmp_path / "report.json"
    assert cli_main(["eval-lm", str(model_dir), str(tmp_path / "test.txt"), str(tmp_path / "test.parquet"),
                     f"{tmp_path / 'test.parquet'}?text=missing", "--json", str(report), "--quiet"]) == 1
    files = json.loads(report.read_text())["files"]
    assert files[0]["tokens"] > 0 and files[0]["loss"] == pytest.approx(files[1]["loss"], rel=1e-6)
    assert files[0]["bytes"] == files[1]["bytes"]
    assert "no text column 'missing'" in files[2]["error"]
