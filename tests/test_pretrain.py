"""wav2vec2 pretraining loop: checkpoints, exact resume, bad audio, non-finite steps, torchrun DDP."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from audio_fixtures import make_data_dir
from safetensors.torch import load_file

from seqattn import load_model
from seqattn.cli.main import main as cli_main
from seqattn.models.wav2vec2 import Wav2Vec2ForPretraining
from seqattn.train.config_io import load_config
from seqattn.train.pretrain import PretrainConfig, TrainingError, train

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "wav2vec2" / "pretrain_tiny.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    hi = make_data_dir(root, "train_hi", 8, "hi", seconds=(1.0, 1.0), seed=1)
    ta = make_data_dir(root, "train_ta", 8, "ta", seconds=(1.0, 1.0), seed=2)
    return [hi, ta]


def _config(data, out, *extra):
    sources = "[" + ", ".join(f"{{path: {d}, language: {d.name[-2:]}}}" for d in data) + "]"
    return load_config(PretrainConfig, str(TINY), [
        f"data.train={sources}", f"run.output_dir={out}", "data.max_sample_size=16000", "data.min_sample_size=4000",
        "data.max_tokens=64000", "optim.warmup_updates=2", "optim.max_updates=6", "run.log_every=2",
        "run.save_every=3", "run.tensorboard=true", *extra,
    ])


def _weights(out: Path, step: int):
    return load_file(str(out / "checkpoints" / f"update_{step:08d}" / "model.safetensors"))


def test_pretraining_logs_checkpoints_and_loads(data, tmp_path):
    final = train(_config(data, tmp_path))
    assert final.name == "update_00000006"
    assert (tmp_path / "checkpoints" / "update_00000003" / "training_state.pt").is_file()
    assert (tmp_path / "checkpoints" / "LAST").read_text().strip() == "update_00000006"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    log = (tmp_path / "train.log").read_text()
    assert "accuracy=" in log and "code_perplexity=" in log and "audio_s_per_s=" in log
    assert "utterances per language" in log
    model = load_model(final)
    assert isinstance(model, Wav2Vec2ForPretraining) and not model.training
    state = torch.load(final / "training_state.pt", weights_only=True)
    assert state["position"]["step"] == 6


def test_resume_continues_exactly(data, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(_config(data, straight))
    train(_config(data, interrupted, "run.stop_after=2"))  # stops (and saves) after 2 updates
    assert (interrupted / "checkpoints" / "update_00000002").is_dir()
    train(_config(data, interrupted, "run.stop_after=3"))  # resumes at 2, stops at 5
    train(_config(data, interrupted))  # resumes at 5, finishes at 6
    a, b = _weights(straight, 6), _weights(interrupted, 6)
    # 2-thread CPU convolution backward sums in a run-dependent order: single elements can differ by ~1e-6
    # between two identical runs; a wrong data position or RNG state moves weights by 1e-3 or more.
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5, msg=lambda m, key=key: f"{key}: {m}")


def test_unreadable_audio_is_skipped_and_listed(data, tmp_path):
    broken = make_data_dir(tmp_path, "train_bn", 4, "bn", seconds=(1.0, 1.0), seed=3)
    wav = next((tmp_path / "wav" / "train_bn").glob("*.wav"))
    wav.write_bytes(os.urandom(3000))  # random bytes with a .wav name
    train(_config(data + [broken], tmp_path / "run", "optim.max_updates=2", "run.save_every=2"))
    failed = (tmp_path / "run" / "failed_audio.txt").read_text()
    assert wav.stem in failed
    assert "1 unreadable" in (tmp_path / "run" / "train.log").read_text()


def test_cli_rejects_bad_key_and_missing_data(data, tmp_path, capsys):
    assert cli_main(["pretrain", str(TINY), "optim.learning_rate=1"]) == 2
    assert "unknown config key(s): optim.learning_rate" in capsys.readouterr().err
    assert cli_main(["pretrain", str(TINY), f"data.train=[{{path: {tmp_path}/nope}}]"]) == 2
    assert "does not exist" in capsys.readouterr().err


class _InfGradient(torch.autograd.Function):
    """Adds nothing to the loss and sends inf back through it: a finite loss with non-finite gradients."""

    @staticmethod
    def forward(ctx, loss):
        return loss * 0.0

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def _non_finite_at(monkeypatch, first_bad: int, last_bad: int, how: str = "nan loss"):
    """Make the loss of pretraining calls first_bad..last_bad (1-based) a NaN, an inf, or finite with inf gradients."""
    original = Wav2Vec2ForPretraining.pretraining_loss
    calls = {"n": 0}

    def patched(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls["n"] += 1
        if first_bad <= calls["n"] <= last_bad:
            if how == "inf gradient":
                result.loss = result.loss + _InfGradient.apply(result.loss)
            else:
                result.loss = result.loss * float("nan" if how == "nan loss" else "inf")
        return result

    monkeypatch.setattr(Wav2Vec2ForPretraining, "pretraining_loss", patched)


@pytest.mark.parametrize("how", ["nan loss", "inf loss", "inf gradient"])
def test_non_finite_steps_are_skipped(data, tmp_path, monkeypatch, how):
    _non_finite_at(monkeypatch, 2, 3, how)
    final = train(_config(data, tmp_path, "optim.max_updates=4", "run.save_every=4"))
    weights = load_file(str(final / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    log = (tmp_path / "train.log").read_text()
    assert "step skipped (2 in a row, 2 in total)" in log
    assert torch.load(final / "training_state.pt", weights_only=True)["position"]["skipped_total"] == 2


def test_too_many_non_finite_steps_abort_without_corrupting(data, tmp_path, monkeypatch):
    _non_finite_at(monkeypatch, 3, 10**9)
    with pytest.raises(TrainingError, match="3 consecutive non-finite steps"):
        train(_config(data, tmp_path, "run.save_every=2", "run.max_bad_steps=3"))
    last = tmp_path / "checkpoints" / "update_00000002"
    weights = load_file(str(last / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(data, tmp_path):
    """2 ranks on half-batches == 1 process on full batches, k-means centroids (routing heads) and the global
    heads' summary queries included (one head each of local, routed, dilated and global)."""
    overrides = [
        "optim.max_updates=3", "run.save_every=3", "run.tensorboard=false", "data.max_tokens=64000",
        "model.attention={num_heads: 4, local: {heads: 1, window_left: 8, window_right: 8}, "
        "routing: {heads: 1, window: 16, clusters: 3, kmeans_decay: 0.5}, dilated: {heads: 1, dilation: 2, window: 4}, "
        "global_tokens: {heads: 1, tokens: 2, window: 4}}",
        "model.mask_channel_prob=0.0", "data.max_sample_size=16000", "data.min_sample_size=4000",
        "optim.warmup_updates=1", "run.threads=1",
    ]
    sources = "[" + ", ".join(f"{{path: {d}, language: {d.name[-2:]}}}" for d in data) + "]"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    runs = {}
    for procs in (1, 2):
        out = tmp_path / f"procs{procs}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port",
               str(29500 + procs + os.getpid() % 1000), "-m", "seqattn.cli.main", "pretrain", str(TINY),
               f"data.train={sources}", f"run.output_dir={out}", *overrides]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[procs] = _weights(out, 3)
    one, two = runs[1], runs[2]
    assert any("kmeans.means" in key for key in one) and any("global_attention.queries" in key for key in one)
    for key in one:
        torch.testing.assert_close(one[key], two[key], atol=2e-5, rtol=1e-4, msg=lambda m, key=key: f"{key}: {m}")


def test_bf16_autocast_and_gradient_accumulation(data, tmp_path):
    final = train(_config(data, tmp_path, "run.precision=bf16", "optim.update_freq=2", "optim.max_updates=2",
                          "run.save_every=2", "run.log_every=1"))
    state = torch.load(final / "training_state.pt", weights_only=True)
    assert state["position"]["step"] == 2
    assert state["position"]["batch"] == 4  # two micro-batches per update
    weights = load_file(str(final / "model.safetensors"))
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())
