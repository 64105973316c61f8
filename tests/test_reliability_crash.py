"""Crash safety of every trainer: kill -9 at random moments (checkpoint writes included) and resume; a full
disk during a checkpoint write; a rank killed under torchrun. Figures go to docs/RELIABILITY.md."""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from audio_fixtures import make_data_dir
from safetensors.torch import load_file

from seqattn import load_model
from seqattn.models.io import save_model
from seqattn.models.wav2vec2 import Wav2Vec2ForPretraining, tiny

pytestmark = pytest.mark.slow  # minutes of training, recipes or benchmark runs: not in make test-fast

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
KILLS = 5
KILL_IN_WRITE = 2  # this kill (0-based) waits for a checkpoint write in progress, so every run has one
# Runs the CLI with a slow disk: each safetensors file is written, then the save stalls 2 s before it finishes,
# which leaves time to kill it while its staging directory is half full.
SLOW_SAVE = ("import sys, time; import seqattn.models.io as io; write = io.save_file; "
             "io.save_file = lambda *a, **k: (write(*a, **k), time.sleep(2.0))[0]; "
             "from seqattn.cli.main import main; sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    texts = ["नमस्ते दुनिया", "भारत देश", "हिंदी भाषा"]
    train = make_data_dir(root, "train_hi", 12, "hi", seconds=(1.0, 1.0), seed=1, texts=texts)
    torch.manual_seed(0)
    pretrained = save_model(Wav2Vec2ForPretraining(tiny()), root / "pretrained")
    text = root / "text.txt"
    text.write_text("".join(f"line {i} of a small corpus for the language model.\n" for i in range(600)))
    return {"train": train, "pretrained": pretrained, "text": text}


def command(trainer: str, corpora, out: Path, updates: int) -> list[str]:
    common = [f"run.output_dir={out}", f"optim.max_updates={updates}", "run.save_every=1", "run.keep_last=2",
              "run.log_every=1", "run.tensorboard=false", "run.threads=1"]
    base = [sys.executable, "-m", "seqattn.cli.main"]
    if trainer == "pretrain":
        return base + ["pretrain", str(REPO / "recipes/wav2vec2/pretrain_tiny.yaml"),
                       f"data.train=[{{path: {corpora['train']}, language: hi}}]", "data.max_sample_size=16000",
                       "data.min_sample_size=4000", "data.max_tokens=32000", "optim.warmup_updates=2", *common]
    if trainer == "finetune":
        return base + ["finetune", str(REPO / "recipes/wav2vec2/finetune_tiny.yaml"), f"init={corpora['pretrained']}",
                       f"data.train=[{{path: {corpora['train']}}}]", "data.max_tokens=32000", "validate_every=0",
                       "freeze_updates=2", "model.dropout=0.0", "model.layerdrop=0.0", *common]
    return base + [
        "train-lm",
        str(REPO / "recipes/lm/tinyshakespeare_char.yaml"),
        f"data.train=[{corpora['text']}]",
        "model.dim=32",
        "model.num_layers=2",
        "model.attention.local.heads=2",
        "model.attention.routing.heads=2",
        "model.routing_layers=-1",
        "model.attention.local.window_left=8",
        "model.attention.routing.window=8",
        "model.attention.routing.clusters=2",
        "model.max_context=32",
        "data.seq_len=32",
        "data.batch_size=4",
        "optim.warmup_updates=2",
        *common,
    ]


def checkpoints_all_loadable(out: Path) -> int:
    """Every update_* directory on disk is complete and loads; LAST names one of them. Returns how many."""
    directory = out / "checkpoints"
    found = sorted(directory.glob("update_*")) if directory.is_dir() else []
    for path in found:
        load_model(path)
        torch.load(path / "training_state.pt", weights_only=True)
    if (directory / "LAST").is_file():
        assert (directory / (directory / "LAST").read_text().strip()).is_dir()
    return len(found)


def final_trace(out: Path) -> dict[int, dict]:
    """The surviving record of every update (the last line written for it)."""
    records = {}
    for line in (out / "updates.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by kill -9
            continue
        if row["applied"]:
            records[row["update"]] = row
    return records


@pytest.mark.parametrize("trainer", ["train-lm", "pretrain", "finetune"])
def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(trainer, corpora, tmp_path):
    updates = 30
    reference = tmp_path / "reference"
    subprocess.run(command(trainer, corpora, reference, updates), check=True, capture_output=True, env=ENV, timeout=600)
    out = tmp_path / "killed"
    rng = random.Random(f"{trainer}-kills")
    kills, hit_writes = 0, 0
    while kills < KILLS:
        cmd = command(trainer, corpora, out, updates)
        in_write = kills == KILL_IN_WRITE
        if in_write:  # cmd is [python, -m, seqattn.cli.main, ...]: the same arguments through SLOW_SAVE
            cmd = [sys.executable, "-c", SLOW_SAVE, *cmd[3:]]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
        before = len(final_trace(out)) if (out / "updates.jsonl").is_file() else 0
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if in_write:  # wait for a checkpoint's weights in its staging directory
                if any((p / "model.safetensors").is_file() for p in (out / "checkpoints").glob(".update_*.tmp")):
                    break
            elif (out / "updates.jsonl").is_file() and len(final_trace(out)) > before:
                break  # this run has trained at least once
            time.sleep(0.02)
        time.sleep(0.1 if in_write else rng.uniform(0.0, 0.1))
        if proc.poll() is not None:  # finished before we could kill it: start again from scratch
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        hit_writes += any(p.name.endswith(".tmp") for p in (out / "checkpoints").glob(".update_*"))
        checkpoints_all_loadable(out)
    assert kills == KILLS, f"the run finished after {kills} kills: make it longer"
    assert hit_writes >= 1, "no kill landed inside a checkpoint write"
    result = subprocess.run(
        command(trainer, corpora, out, updates), capture_output=True, text=True, env=ENV, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert checkpoints_all_loadable(out) <= 3  # rotation: the last 2 (and LAST/BEST among them)
    trace = final_trace(out)
    assert sorted(trace) == list(range(1, updates + 1))  # every update exactly once in the surviving record
    batches = [(trace[s]["epoch"], b) for s in sorted(trace) for b in trace[s]["batches"]]
    assert len(batches) == len(set(batches))  # no micro-batch consumed twice
    for epoch in {e for e, _ in batches}:  # nor skipped: each epoch's batches are 0, 1, 2, ... in order
        seen = [b for e, b in batches if e == epoch]
        assert seen == list(range(seen[0], seen[0] + len(seen))) and (epoch == batches[0][0] or seen[0] == 0)
    final = load_file(str(out / "checkpoints" / f"update_{updates:08d}" / "model.safetensors"))
    expected = load_file(str(reference / "checkpoints" / f"update_{updates:08d}" / "model.safetensors"))
    for key in expected:
        torch.testing.assert_close(
            final[key], expected[key], atol=1e-5, rtol=1e-4, msg=lambda m, key=key: f"{key}: {m}"
        )
    print(f"{trainer}: {kills} kills, {hit_writes} during a checkpoint write")


def test_rotation_keeps_the_last_k_and_the_best(tmp_path):
    from seqattn.train.checkpoint import CheckpointManager

    model = Wav2Vec2ForPretraining(tiny())
    manager = CheckpointManager(tmp_path / "checkpoints", keep_last=2)

    def on_disk() -> list[str]:
        return sorted(p.name for p in manager.directory.glob("update_*"))

    for step, loss in enumerate([3.0, 1.0, 2.0, 2.5, 1.5], start=1):  # the best (1.0) is update 2
        manager.save(model, {"step": step}, step, metric=loss)
    assert on_disk() == ["update_00000002", "update_00000004", "update_00000005"]
    assert manager.best().name == "update_00000002" and manager.latest().name == "update_00000005"
    assert torch.load(manager.best() / "training_state.pt", weights_only=True) == {"step": 2}
    manager.save(model, {"step": 6}, 6, metric=0.5)  # a new best: the old one is rotated out with the others
    assert on_disk() == ["update_00000005", "update_00000006"] and manager.best().name == "update_00000006"
    assert not list(manager.directory.glob(".update_*"))  # nothing half-deleted left behind
    checkpoints_all_loadable(tmp_path)


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one(corpora, tmp_path, monkeypatch):
    import seqattn.models.io as io
    from seqattn.train.config_io import load_config
    from seqattn.train.lm import LMTrainConfig, train
    from seqattn.train.loop import TrainingError

    real_save, calls = io.save_file, {"n": 0}

    def save_file(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the third checkpoint finds the disk full half-way through
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(*args, **kwargs)

    monkeypatch.setattr(io, "save_file", save_file)
    argv = command("train-lm", corpora, tmp_path / "lm", 6)
    config = load_config(LMTrainConfig, argv[4], argv[5:])
    with pytest.raises(
        TrainingError,
        match=r"could not write checkpoint at update 3: \[Errno 28\] No space left.*"
        r"update_00000002\) is intact",
    ):
        train(config)
    directory = tmp_path / "lm" / "checkpoints"
    assert (directory / "LAST").read_text().strip() == "update_00000002"
    assert not list(directory.glob(".update_*"))  # the failed staging directory was removed
    assert checkpoints_all_loadable(tmp_path / "lm") == 2
    monkeypatch.setattr(io, "save_file", real_save)  # space again: the run resumes from update 2
    assert train(config).name == "update_00000006"


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child)] + _children(int(child))
    return found


def _rank_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            return item[5:].decode()
    return None


def test_a_killed_rank_ends_the_torchrun_job_then_resume_works(corpora, tmp_path):
    out = tmp_path / "ddp"
    argv = command("train-lm", corpora, out, 400)
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(29800 + os.getpid() % 1000),
        "-m",
        "seqattn.cli.main",
    ] + argv[3:]
    proc = subprocess.Popen(torchrun, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "updates.jsonl").is_file() and len(final_trace(out)) >= 3):
        time.sleep(0.05)
    victims = [pid for pid in _children(proc.pid) if _rank_of(pid) == "1"]
    assert victims, "rank 1 not found"
    os.kill(victims[0], signal.SIGKILL)
    started = time.time()
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job hung after a rank was killed")
    assert proc.returncode != 0
    print(f"torchrun exited {proc.returncode} {time.time() - started:.1f} s after rank 1 was killed")
    checkpoints_all_loadable(out)
    resumed = subprocess.run(
        command("train-lm", corpora, out, len(final_trace(out)) + 3),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in (out / "train.log").read_text()
