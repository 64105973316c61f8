"""Model directories that disagree with themselves: every file is untrusted, and each disagreement is a clear
error, through load_model and through the CLI, before the model is built."""
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from audio_fixtures import make_data_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqattn import load_model
from seqattn.cli.main import main as cli_main
from seqattn.data.text import BLANK, UNK, WORD_BOUNDARY
from seqattn.errors import SeqattnError
from seqattn.models import io
from seqattn.models.io import ModelDirError, save_model
from seqattn.models.lm import TransformerLM, presets
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, tiny

TOKENS = [BLANK, UNK, WORD_BOUNDARY, "क", "ख", "ग"]


@pytest.fixture()
def ctc_dir(tmp_path):
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny(vocab_size=len(TOKENS))).eval()
    vocab = json.dumps({"type": "char", "tokens": TOKENS})
    return save_model(model, tmp_path / "ctc", extra_files={"tokens.json": vocab})


def _edit_config(model_dir: Path, **changes) -> None:
    meta = json.loads((model_dir / "config.json").read_text())
    meta["config"].update(changes)
    (model_dir / "config.json").write_text(json.dumps(meta))


def _never_built(monkeypatch):
    """Fail the test if the weights are read into memory or a real model is built: the checks must refuse
    the directory before either."""
    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded or a model built before the directory was checked")
    monkeypatch.setattr(io, "load_file", refuse)
    monkeypatch.setattr(io, "build_model", refuse)


CONFIG_CASES = [
    ({"ffn_dim": 40}, r"ffn_dim is 40 but model\.safetensors holds wav2vec2\.encoder\.layers\.0\.ffn\.fc1\.weight "
                      r"with shape \(192, 96\)"),
    ({"num_layers": 5}, r"num_layers asks for 5 layers but model\.safetensors holds 2"),
    ({"num_layers": 10**9}, r"num_layers asks for 1000000000 layers but model\.safetensors holds 2"),
    ({"embed_dim": 2**20, "attention": {"num_heads": 2}}, r"model\.safetensors holds .* with shape"),
    ({"ffn_dim": "192"}, r"config\.json: ffn_dim is .192. \(str\), expected int"),
    ({"dropout": [0.1]}, r"config\.json: dropout is \[0\.1\] \(list\), expected float"),
    ({"ffn_dims": 64}, r"config\.json: unknown config key\(s\): ffn_dims"),
    ({"attention": {"num_heads": 5}}, r"config\.json: .*embed_dim 96 not divisible by 5 heads"),
    ({"vocab_size": 9}, r"vocab_size is 9 but model\.safetensors holds head\.weight with shape \(6, 96\)"),
    ({"conv_layers": [[16, 10, 5]]}, r"conv_layers asks for 1 layers but model\.safetensors holds"),
]


@pytest.mark.parametrize("changes, message", CONFIG_CASES)
def test_config_that_disagrees_is_refused_before_building(ctc_dir, monkeypatch, changes, message):
    _edit_config(ctc_dir, **changes)
    _never_built(monkeypatch)
    with pytest.raises(ModelDirError, match=message):
        load_model(ctc_dir)


@pytest.mark.parametrize("changes, message", CONFIG_CASES)
def test_config_that_disagrees_is_one_line_from_the_cli(ctc_dir, tmp_path, capsys, changes, message):
    """The same cases through `seqattn transcribe` (in-process): exit 2, one line, the same reason."""
    import re

    _edit_config(ctc_dir, **changes)
    wav = make_data_dir(tmp_path, "data", 1, "hi") and next((tmp_path / "wav" / "data").glob("*.wav"))
    assert cli_main(["transcribe", str(ctc_dir), str(wav), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err


def test_weights_and_vocabulary_problems_are_one_line_from_the_cli(ctc_dir, tmp_path, capsys):
    wav = make_data_dir(tmp_path, "data", 1, "hi") and next((tmp_path / "wav" / "data").glob("*.wav"))
    weights, tokens = ctc_dir / "model.safetensors", ctc_dir / "tokens.json"
    original_weights, original_tokens = weights.read_bytes(), tokens.read_text(encoding="utf-8")
    for damage, reason in [(lambda: weights.write_bytes(original_weights[:-100]), "truncated: tensor"),
                           (lambda: weights.write_bytes(b"12345"), "shorter than its header"),
                           (lambda: tokens.write_text('{"type": "char", "tokens": "abc"}'), "character vocabulary"),
                           (lambda: tokens.write_text(json.dumps({"type": "char", "tokens": TOKENS[:-1]})),
                            "has 5 tokens but the model outputs 6")]:
        damage()
        assert cli_main(["transcribe", str(ctc_dir), str(wav), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and reason in err, err
        weights.write_bytes(original_weights)
        tokens.write_text(original_tokens, encoding="utf-8")


def test_weights_file_problems_name_the_tensor(ctc_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    weights = ctc_dir / "model.safetensors"
    state = {name: tensor.clone() for name, tensor in load_file(str(weights)).items()}  # not a view of the file
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelDirError, match=r"cannot read .*model\.safetensors: truncated: tensor .* ends at byte"):
        load_model(ctc_dir)
    weights.write_bytes(data[:5])
    with pytest.raises(ModelDirError, match="shorter than its header"):
        load_model(ctc_dir)
    save_file({**state, "extra.weight": torch.zeros(2)}, str(weights))
    with pytest.raises(ModelDirError, match=r"holds 1 tensor\(s\) that .*config\.json does not build: extra\.weight"):
        load_model(ctc_dir)
    save_file({k: v for k, v in state.items() if k != "head.bias"}, str(weights))
    with pytest.raises(ModelDirError, match=r"lacks 1 tensor\(s\) that .*config\.json asks for: head\.bias"):
        load_model(ctc_dir)
    save_file({**state, "head.weight": state["head.weight"].to(torch.int64)}, str(weights))
    with pytest.raises(ModelDirError, match=r"holds head\.weight as I64, but the model needs floating-point"):
        load_model(ctc_dir)
    save_file({**state, "head.weight": state["head.weight"].half()}, str(weights))
    assert load_model(ctc_dir).head.weight.dtype == torch.float32  # another float width is fine


def test_vocabulary_files_are_checked(ctc_dir, tmp_path):
    from seqattn.decode.transcribe import load_recognizer

    tokens = ctc_dir / "tokens.json"
    for content, message in [
        ({"type": "char", "tokens": TOKENS[:-1]}, r"has 5 tokens but the model outputs 6"),
        ({"type": "char", "tokens": "abc"}, r"is not a seqattn character vocabulary"),
        ({"type": "char", "tokens": [BLANK, UNK, WORD_BOUNDARY, 7, "ख", "ग"]}, r"tokens must be strings"),
        ({"type": "char", "tokens": ["x", UNK, WORD_BOUNDARY, "क", "ख", "ग"]}, r"must start with"),
        ({"type": "char", "tokens": TOKENS[:4] + ["क", "ग"]}, r"token 'क' appears twice"),
        ({"tokens": TOKENS}, r"is not a seqattn character vocabulary"),
        ([1, 2], r"not a seqattn vocabulary"),
    ]:
        tokens.write_text(json.dumps(content), encoding="utf-8")
        with pytest.raises(SeqattnError, match=message):
            load_recognizer(ctc_dir)


def test_lm_tokenizer_that_disagrees_with_the_model_is_refused(tmp_path, capsys):
    from seqattn.data.lm_tokenizers import ByteTokenizer, tokenizer_to_json

    model_dir = save_model(TransformerLM(presets.tiny(vocab_size=50)), tmp_path / "lm",
                           extra_files={"tokenizer.json": tokenizer_to_json(ByteTokenizer())})
    assert cli_main(["eval-lm", str(model_dir), str(model_dir / "README.md")]) == 2
    assert "the tokenizer has 257 tokens, the model only 50" in capsys.readouterr().err
    (model_dir / "tokenizer.json").write_text('{"type": 3}')
    assert cli_main(["eval-lm", str(model_dir), str(model_dir / "README.md")]) == 2
    assert "tokenizer.json" in capsys.readouterr().err


def test_lm_config_is_checked_against_its_weights(tmp_path, monkeypatch):
    model_dir = save_model(TransformerLM(presets.tiny(vocab_size=50)), tmp_path / "lm")
    meta = json.loads((model_dir / "config.json").read_text())
    meta["config"]["attention"]["num_heads"] = 8
    meta["config"]["dim"] = 48
    (model_dir / "config.json").write_text(json.dumps(meta))
    _never_built(monkeypatch)
    with pytest.raises(ModelDirError, match=r"dim is 48 but model\.safetensors holds embedding\.weight with shape "
                                            r"\(50, 32\)"):
        load_model(model_dir)
    meta["config"]["dim"], meta["config"]["max_context"] = 64, 64
    (model_dir / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ModelDirError, match=r"dim or (.* or )?max_context is 64 but model\.safetensors holds"):
        load_model(model_dir)


def test_hugging_face_directory_points_to_hf_import(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "wav2vec2",
                                                             "architectures": ["Wav2Vec2ForCTC"]}))
    with pytest.raises(ModelDirError, match=r"Hugging Face transformers model directory; convert it first: "
                                            r"seqattn convert hf-import"):
        load_model(tmp_path / "hf")


@pytest.mark.parametrize("command", ["transcribe", "analyze-attention", "convert-hf-export", "localize"])
def test_every_loading_command_prints_one_line_and_exits_2(ctc_dir, tmp_path, command):
    """Through the real CLI in a subprocess: exit code 2, the reason, and no traceback."""
    _edit_config(ctc_dir, ffn_dim=40)
    data = make_data_dir(tmp_path, "data", 2, "hi")
    args = {"transcribe": ["transcribe", str(ctc_dir), "--data-dir", str(data)],
            "analyze-attention": ["analyze", "attention", str(ctc_dir), str(data), "--out-dir", str(tmp_path / "a")],
            "convert-hf-export": ["convert", "hf-export", str(ctc_dir), str(tmp_path / "hf")],
            "localize": ["convert", "localize", str(ctc_dir), str(tmp_path / "loc"), "--data", str(data)]}[command]
    result = subprocess.run([sys.executable, "-m", "seqattn.cli.main", *args], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "ffn_dim is 40 but model.safetensors holds" in result.stderr


def test_finetune_init_from_a_directory_that_disagrees(ctc_dir, tmp_path, capsys):
    _edit_config(ctc_dir, ffn_dim=40)
    data = make_data_dir(tmp_path, "train", 4, "hi", texts=["क ख"])
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "wav2vec2" / "finetune_tiny.yaml"
    assert cli_main(["finetune", str(recipe), f"init={ctc_dir}", f"data.train=[{{path: {data}}}]",
                     f"run.output_dir={tmp_path / 'ft'}"]) == 2
    assert "ffn_dim is 40 but model.safetensors holds" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_with_a_training_state_of_another_model(tmp_path, capsys):
    """A checkpoint's optimizer state from another model is refused with the reason, not a traceback."""
    from seqattn.train.checkpoint import STATE_FILE

    data = make_data_dir(tmp_path, "train", 6, "hi", texts=["क ख", "ग क"])
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "wav2vec2" / "finetune_tiny.yaml"
    args = ["finetune", str(recipe), "init=null", "freeze_cnn=false", "freeze_updates=0",
            f"data.train=[{{path: {data}}}]", f"run.output_dir={tmp_path / 'ft'}", "optim.max_updates=2",
            "run.save_every=1", "run.tensorboard=false", "validate_every=0"]
    assert cli_main(args) == 0
    checkpoint = sorted((tmp_path / "ft" / "checkpoints").glob("update_*"))[-1]
    state = torch.load(checkpoint / STATE_FILE, weights_only=True)
    state["optimizer"]["param_groups"][0]["params"] = state["optimizer"]["param_groups"][0]["params"][:3]
    torch.save(state, checkpoint / STATE_FILE)
    capsys.readouterr()
    assert cli_main(args[:-3] + ["optim.max_updates=4", "run.save_every=1", "run.tensorboard=false"]) == 2
    err = capsys.readouterr().err
    assert f"cannot resume from {checkpoint}" in err and "optimizer" in err


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True)
                           | st.text(max_size=8), lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["conv_layers", "extractor_mode", "conv_bias", "embed_dim", "ffn_dim", "num_layers",
                            "attention", "layer_attention", "layer_norm_first", "conv_pos", "conv_pos_groups",
                            "layer_norm_eps", "dropout", "latent_temp", "vocab_size", "final_dim", "latent_groups",
                            "new_key"]),
       value=JSON_VALUES)
def test_fuzzed_config_is_loaded_or_cleanly_refused(ctc_dir, key, value):
    meta = json.loads((ctc_dir / "config.json").read_text())
    original = dict(meta["config"])
    meta["config"][key] = value
    (ctc_dir / "config.json").write_text(json.dumps(meta))
    try:
        load_model(ctc_dir)
    except ModelDirError:
        pass
    finally:
        meta["config"] = original
        (ctc_dir / "config.json").write_text(json.dumps(meta))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 4000), position=st.integers(0, 4000), byte=st.integers(0, 255))
def test_fuzzed_weights_file_is_loaded_or_cleanly_refused(ctc_dir, cut, position, byte):
    """Truncation anywhere and a changed byte anywhere in the header or data: a clean refusal, or (a changed
    data byte) a model that loads."""
    weights = ctc_dir / "model.safetensors"
    original = weights.read_bytes()
    (length,) = struct.unpack("<Q", original[:8])
    damaged = bytearray(original[: max(0, len(original) - cut)] if cut else original)
    if position < len(damaged) and position < 8 + length:
        damaged[position] = byte
    weights.write_bytes(bytes(damaged))
    try:
        load_model(ctc_dir)
    except ModelDirError:
        pass
    finally:
        weights.write_bytes(original)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON_VALUES, key=st.sampled_from(["type", "tokens", "strip_punctuation", "lowercase", "common_script"]))
def test_fuzzed_vocabulary_is_loaded_or_cleanly_refused(ctc_dir, key, value):
    from seqattn.decode.transcribe import load_recognizer

    tokens = ctc_dir / "tokens.json"
    original = tokens.read_text(encoding="utf-8")
    content = json.loads(original)
    content[key] = value
    tokens.write_text(json.dumps(content), encoding="utf-8")
    try:
        load_recognizer(ctc_dir)
    except SeqattnError:
        pass
    finally:
        tokens.write_text(original, encoding="utf-8")


def test_loaded_model_owns_its_memory_and_ties_its_weights(tmp_path):
    """The model is filled without a random initialisation first (assign), so check what that could break:
    the same outputs, tied weights still tied, trainable parameters, and no memory shared with the file
    (overwriting it in place, as cp does, must not touch a running model)."""
    config = presets.tiny(vocab_size=50)
    original = TransformerLM(config).eval()
    model_dir = save_model(original, tmp_path / "lm")
    loaded = load_model(model_dir)
    assert loaded.output.weight is loaded.embedding.weight
    assert all(p.requires_grad and not p.is_meta for p in loaded.parameters())
    tokens = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(loaded(tokens).logits, original(tokens).logits)
    with open(model_dir / "model.safetensors", "r+b") as handle:
        handle.truncate(16)  # in place: a mapping of the old file would now fault
    torch.testing.assert_close(loaded(tokens).logits, original(tokens).logits)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON_VALUES, key=st.sampled_from(["type", "tokens", "model", "model_type", "extra"]),
       kind=st.sampled_from(["byte", "char", "word", "sentencepiece"]))
def test_fuzzed_tokenizer_file_is_loaded_or_cleanly_refused(tmp_path, value, key, kind):
    from seqattn.data.lm_tokenizers import TokenizerError, load_tokenizer

    directory = tmp_path / "tokenizer"
    directory.mkdir(exist_ok=True)
    content = {"type": kind, "tokens": ["a", "b"], key: value}
    (directory / "tokenizer.json").write_text(json.dumps(content), encoding="utf-8")
    try:
        load_tokenizer(directory)
    except TokenizerError:
        pass


@pytest.fixture(scope="module")
def lm_checkpoint(tmp_path_factory):
    """A language-model run's checkpoint directory, its training_state.pt fuzzed below."""
    from seqattn.train.checkpoint import CheckpointManager

    torch.manual_seed(0)
    model = TransformerLM(presets.tiny(vocab_size=50))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.loss(torch.randint(0, 50, (2, 8)), torch.randint(0, 50, (2, 8)))[1].backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    manager = CheckpointManager(tmp_path_factory.mktemp("lm_run") / "checkpoints")
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "position": {"step": 1, "epoch": 0, "batch": 1, "bad_streak": 0, "skipped_total": 0}, "config": "{}"}
    return manager, manager.save(model, state, 1)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from([("optimizer",), ("optimizer", "param_groups"), ("optimizer", "state"), ("scheduler",),
                             ("position",), ("position", "step"), ("position", "extra"), ("config",), ("extra",)]),
       value=st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True)
                          | st.text(max_size=4), lambda c: st.lists(c, max_size=3)
                          | st.dictionaries(st.text(max_size=4), c, max_size=3), max_leaves=5))
def test_fuzzed_training_state_resumes_or_is_cleanly_refused(lm_checkpoint, path, value):
    """A training_state.pt with any one entry replaced: resume works, or refuses with a TrainingError."""
    from seqattn.train.checkpoint import STATE_FILE
    from seqattn.train.loop import TrainingError, TrainingState, resume

    manager, checkpoint = lm_checkpoint
    original = (checkpoint / STATE_FILE).read_bytes()
    state = torch.load(checkpoint / STATE_FILE, weights_only=True)
    node = state
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    torch.save(state, checkpoint / STATE_FILE)
    torch.manual_seed(0)
    model = TransformerLM(presets.tiny(vocab_size=50))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    training = TrainingState(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0))
    try:
        resume(manager, training)
    except TrainingError:
        pass
    finally:
        (checkpoint / STATE_FILE).write_bytes(original)
