"""The device rule, precision selection and the fp16 gradient scaler, as far as a CPU-only machine checks them
(tests/test_cuda.py runs the same paths on a GPU where one exists)."""
import ast
from pathlib import Path

import pytest
import torch

from seqattn.cli.main import main as cli_main
from seqattn.utils.device import DeviceError, gradient_scaler, resolve_device, resolve_precision, to_device

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_the_cpu_without_a_gpu_and_an_explicit_gpu_is_a_clear_error(no_gpu):
    assert resolve_device("auto") == resolve_device(None) == resolve_device("cpu") == torch.device("cpu")
    for spec in ("cuda", "cuda:1", "CUDA"):
        with pytest.raises(DeviceError, match=f"device '{spec}' was asked for, but no CUDA GPU is visible"):
            resolve_device(spec)
    with pytest.raises(DeviceError, match="device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        resolve_device("gpu")


def test_torchrun_ranks_take_their_local_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("auto", local_rank=2) == torch.device("cuda", 2)
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 3)
    assert resolve_device("cuda:1", local_rank=3) == torch.device("cuda", 1)  # an explicit index wins
    with pytest.raises(DeviceError, match="cuda:4 was asked for, but only 4 GPU"):
        resolve_device("cuda:4")


def test_precision_follows_the_device(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", gpu) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", gpu) == "fp32"
    with pytest.raises(DeviceError, match="does not support bf16; use precision fp16"):
        resolve_precision("bf16", gpu)
    assert resolve_precision("fp16", gpu) == "fp16" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(DeviceError, match="precision must be one of auto, fp32, bf16, fp16"):
        resolve_precision("half", cpu)
    assert isinstance(gradient_scaler("fp16", cpu), torch.amp.GradScaler)
    assert gradient_scaler("bf16", cpu) is None and gradient_scaler("fp32", cpu) is None


def test_batches_move_whole():
    batch = {"waves": torch.zeros(2, 3), "keys": [1, 2], "nested": [torch.ones(1), "x"], "batch_index": 4}
    moved = to_device(batch, torch.device("cpu"))
    assert moved["keys"] == [1, 2] and moved["batch_index"] == 4 and moved["nested"][1] == "x"
    assert torch.equal(moved["waves"], batch["waves"])


def test_commands_refuse_a_gpu_that_is_not_there_in_one_line(no_gpu, tmp_path, capsys):
    from audio_fixtures import make_data_dir

    from seqattn.data.lm_tokenizers import ByteTokenizer, tokenizer_to_json
    from seqattn.models.io import save_model
    from seqattn.models.lm import TransformerLM, presets

    lm = save_model(TransformerLM(presets.tiny(vocab_size=257)), tmp_path / "lm",
                    extra_files={"tokenizer.json": tokenizer_to_json(ByteTokenizer())})
    data = make_data_dir(tmp_path, "data", 1, "hi")
    text = tmp_path / "t.txt"
    text.write_text("hello\n")
    for args in (["eval-lm", str(lm), str(text), "--device", "cuda"],
                 ["generate", str(lm), "hi", "--device", "cuda:0"],
                 ["analyze", "attention", str(lm), str(text), "--out-dir", str(tmp_path / "a"), "--device", "cuda"],
                 ["transcribe", str(lm), str(data), "--device", "cuda"],
                 ["train-lm", str(REPO / "recipes" / "lm" / "tinyshakespeare_char.yaml"), f"data.train=[{text}]",
                  f"run.output_dir={tmp_path / 'run'}", "run.device=cuda"]):
        assert cli_main(args) == 2, args
        err = capsys.readouterr().err
        assert "no CUDA GPU is visible" in err and err.count("\n") == 1, err


def _lm_config(tmp_path, *overrides):
    from seqattn.train.config_io import load_config
    from seqattn.train.lm import LMTrainConfig

    text = tmp_path / "train.txt"
    text.write_text("to be or not to be, that is the question. " * 200)
    return load_config(LMTrainConfig, str(REPO / "recipes" / "lm" / "tinyshakespeare_char.yaml"), [
        f"data.train=[{text}]", f"run.output_dir={tmp_path / 'run'}", "model.dim=32", "model.num_layers=1",
        "model.attention.num_heads=2", "model.attention.local.heads=2", "model.max_context=32", "data.seq_len=32",
        "data.batch_size=4", "optim.warmup_updates=1", "run.tensorboard=false", "run.log_every=1", *overrides])


def test_fp16_scaler_trains_saves_its_state_and_resumes(tmp_path):
    from seqattn.train.lm import train

    train(_lm_config(tmp_path, "run.precision=fp16", "optim.max_updates=2", "run.save_every=2"))
    checkpoint = tmp_path / "run" / "checkpoints" / "update_00000002"
    state = torch.load(checkpoint / "training_state.pt", weights_only=True, map_location="cpu")
    assert state["scaler"]["scale"] > 0
    train(_lm_config(tmp_path, "run.precision=fp16", "optim.max_updates=4", "run.save_every=2"))
    log = (tmp_path / "run" / "train.log").read_text()
    assert "device cpu, precision fp16" in log and "resumed from" in log and "train update 4" in log


def test_fp16_overflows_lower_the_scale_and_are_not_bad_steps(tmp_path, monkeypatch):
    """A loss scale far too large overflows the fp16 gradients again and again: each overflow skips the update
    and halves the scale, and none counts towards max_bad_steps (5), so the run still completes."""
    from seqattn.train import loop
    from seqattn.train.lm import train

    monkeypatch.setattr(loop, "gradient_scaler", lambda precision, device: torch.amp.GradScaler(
        device.type, init_scale=2.0**40) if precision == "fp16" else None)
    train(_lm_config(tmp_path, "run.precision=fp16", "optim.max_updates=2", "run.save_every=2"))
    log = (tmp_path / "run" / "train.log").read_text()
    overflows = log.count("fp16 gradient overflow")
    assert overflows > 5 and "loss scale now" in log and "aborting" not in log
    assert (tmp_path / "run" / "checkpoints" / "update_00000002").is_dir()


def test_old_precision_key_points_to_the_new_one(tmp_path, capsys):
    assert cli_main(["train-lm", str(REPO / "recipes" / "lm" / "tinyshakespeare_char.yaml"), "optim.bf16=true",
                     "--print-config"]) == 2
    assert "optim.bf16 is now run.precision" in capsys.readouterr().err


def test_every_torch_load_maps_to_a_device_and_refuses_pickled_code():
    """Checkpoints are device-free: a training state written on a GPU must load on a CPU-only machine."""
    offenders = []
    for path in (REPO / "seqattn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" \
                    and getattr(node.func.value, "id", None) == "torch":
                keywords = {k.arg for k in node.keywords}
                if not {"map_location", "weights_only"} <= keywords:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_device_options_default_to_auto():
    from seqattn.cli.main import build_parser
    from seqattn.train.loop import RunConfig

    parser = build_parser()
    for args in (["transcribe", "m"], ["eval-lm", "m", "f"], ["generate", "m"], ["analyze", "attention", "m", "d",
                                                                                 "--out-dir", "o"],
                 ["convert", "localize", "m", "o"]):
        assert parser.parse_args(args).device == "auto", args
    assert RunConfig().device == "auto" and RunConfig().precision == "auto"
