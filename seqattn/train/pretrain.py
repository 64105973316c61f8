"""wav2vec 2.0 self-supervised pretraining on unlabelled multilingual audio.

Run:  seqattn pretrain recipes/wav2vec2/pretrain_tiny.yaml data.train='[{path: data/hi}]' run.output_dir=exp/pt
      torchrun --nproc_per_node 2 -m seqattn.cli.main pretrain CONFIG.yaml [key=value ...]

Reads top to bottom: configuration, data scan, model and optimiser, resume, then the update loop
(accumulate micro-batches, skip non-finite steps, clip, step, log, checkpoint).
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from seqattn.data.unlabelled import CroppedBatches, item_seed, plan_epoch, scan
from seqattn.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPretraining
from seqattn.models.wav2vec2.masking import generators_for

from .checkpoint import CheckpointManager, load_checkpoint
from .config_io import to_plain
from .distributed import DistributedContext, init_distributed, shutdown_distributed
from .monitor import TrainMonitor
from .schedule import polynomial_decay


class TrainingError(RuntimeError):
    """A training run that cannot go on (clear message, no traceback needed)."""


@dataclass
class DataSource:
    path: str
    language: str | None = None


@dataclass
class PretrainData:
    train: list[DataSource] = field(default_factory=list)
    sample_rate: int = 16000
    max_sample_size: int = 250000  # crop longer utterances (samples)
    min_sample_size: int = 32000  # drop shorter ones
    max_tokens: int = 1400000  # samples per global batch (count x longest)
    alpha: float = 0.7  # language sampling temperature
    num_workers: int = 0
    fix_data_dirs: bool = False  # drop invalid data-dir entries instead of failing


@dataclass
class OptimConfig:
    lr: float = 5e-4
    betas: list = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 0.01
    warmup_updates: int = 32000
    max_updates: int = 400000
    end_lr_ratio: float = 0.0
    power: float = 1.0
    clip_norm: float = 10.0  # 0: no clipping
    update_freq: int = 1  # micro-batches accumulated per update
    bf16: bool = False


@dataclass
class RunConfig:
    output_dir: str = "exp/pretrain"
    seed: int = 1
    log_every: int = 10
    save_every: int = 1000
    keep_last: int = 3
    max_time_s: float = 0.0  # stop (and save) after this wall time; 0 = no limit
    stop_after: int = 0  # stop (and save) after this many updates in this invocation; 0 = run to max_updates
    max_bad_steps: int = 5  # abort after this many consecutive non-finite steps
    tensorboard: bool = True
    threads: int = 0  # torch intra-op threads per process; 0 = leave torch's default


@dataclass
class PretrainConfig:
    model: Wav2Vec2Config = field(default_factory=Wav2Vec2Config)
    data: PretrainData = field(default_factory=PretrainData)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


class PretrainingStep(nn.Module):
    """Puts the loss inside ``forward`` so DDP sees (and synchronises) it."""

    def __init__(self, model: Wav2Vec2ForPretraining, context: DistributedContext):
        super().__init__()
        self.model, self.context = model, context

    def forward(self, waves, generators):
        ctx = self.context
        return self.model.pretraining_loss(
            waves, None, generators, world_size=ctx.world_size, reduce=ctx.sum_differentiable, sync_min=ctx.min_int
        )


@dataclass
class Position:
    """Where the run stands: updates done and the next micro-batch of the epoch plan."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    bad_streak: int = 0
    skipped_total: int = 0


def _validate_sources(config: PretrainConfig) -> None:
    if not config.data.train:
        raise TrainingError("data.train is empty: give at least one data dir or manifest, e.g. "
                            "data.train='[{path: data/train_hi, language: hi}]'")
    for source in config.data.train:
        if not Path(source.path).exists():
            raise TrainingError(f"data source {source.path} does not exist")


def _interval_stats() -> dict:
    return dict(loss=0.0, micro=0, targets=0, correct=0, audio_s=0.0, code_ppl=0.0, prob_ppl=0.0, skipped=0,
                failed=0, start=time.time())


def train(config: PretrainConfig, command: str = "seqattn pretrain") -> Path:
    """Run (or resume) pretraining; returns the directory of the final checkpoint."""
    config.model.validate()
    _validate_sources(config)
    ctx = init_distributed()
    try:
        return _train(config, ctx, command)
    finally:
        shutdown_distributed(ctx)


def _train(config: PretrainConfig, ctx: DistributedContext, command: str) -> Path:
    run, data, optim = config.run, config.data, config.optim
    if run.threads:
        torch.set_num_threads(run.threads)
    out = Path(run.output_dir)
    manager = CheckpointManager(out / "checkpoints", run.keep_last)
    resume_from = manager.latest()
    position = Position()
    torch.manual_seed(run.seed)
    model = Wav2Vec2ForPretraining(config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                                  weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: polynomial_decay(s, optim.warmup_updates, optim.max_updates, optim.end_lr_ratio, optim.power)
    )
    if resume_from is not None:
        state = load_checkpoint(resume_from, model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        position = Position(**state["position"])
    monitor = TrainMonitor(out, ctx.is_main, optim.max_updates, position.step, "pretrain", run.tensorboard)
    if resume_from is not None:
        monitor.message(f"resumed from {resume_from} at update {position.step} (epoch {position.epoch}, "
                        f"batch {position.batch})")

    report = scan([(s.path, s.language) for s in data.train], data.sample_rate, data.min_sample_size,
                  fix=data.fix_data_dirs, progress=ctx.is_main)
    if ctx.is_main:
        (out / "config.json").write_text(json.dumps(to_plain(config), indent=2))
        if report.failed:
            (out / "failed_audio.txt").write_text("\n".join(report.failed) + "\n")
        monitor.message(f"{len(report.items)} utterances; {len(report.failed)} unreadable (see failed_audio.txt); "
                        f"{report.too_short} shorter than {data.min_sample_size} samples dropped; "
                        f"{len(report.fixed)} data-dir problems fixed")
    if not report.items:
        raise TrainingError("no usable audio: every utterance was unreadable or too short")
    step_module = PretrainingStep(model, ctx)
    if ctx.enabled:
        # broadcast_buffers=False: k-means centroids stay identical through their own all-reduce, not by copying
        # rank 0's buffers over the others (which would hide a divergence)
        step_module = DistributedDataParallel(
            step_module, find_unused_parameters=config.model.layerdrop > 0, broadcast_buffers=False
        )
    model.train()

    def save(final: bool = False) -> Path | None:
        path = None
        if ctx.is_main:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "position": position.__dict__.copy(), "config": json.dumps(to_plain(config))}
            try:
                path = manager.save(model, state, position.step, command=command)
            except OSError as error:
                raise TrainingError(f"could not write checkpoint at update {position.step}: {error}; the previous "
                                    f"checkpoint ({manager.latest()}) is intact") from None
            monitor.message(f"saved checkpoint {path}" + (" (final)" if final else ""))
        ctx.barrier()
        return path

    started, first_step = time.time(), position.step
    stats = _interval_stats()
    accumulated = 0
    optimizer.zero_grad(set_to_none=True)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if optim.bf16 else nullcontext
    stop = False
    while position.step < optim.max_updates and not stop:
        plan = plan_epoch(report.items, position.epoch, run.seed, data.alpha, data.max_tokens, data.max_sample_size)
        dataset = CroppedBatches(report.items, plan, run.seed, data.max_sample_size, data.sample_rate,
                                 config.model.normalize_waveform,
                                 ctx.rank, ctx.world_size)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=range(position.batch, len(dataset)), num_workers=data.num_workers,
            collate_fn=lambda b: b,
        )
        if ctx.is_main and position.batch == 0:
            monitor.message(f"epoch {position.epoch}: {len(plan.batches)} batches, utterances per language "
                            f"{dict(sorted(plan.language_counts.items()))}")
        for batch in loader:
            position.batch = batch["batch_index"] + 1
            stats["failed"] += len(batch["failed"])
            for failure in batch["failed"]:
                monitor.message(f"skipped unreadable audio {failure}")
            waves = batch["waves"]
            if ctx.any_flag(waves.shape[0] == 0 or waves.shape[1] < 400):
                stats["skipped"] += 1
                continue
            model.set_num_updates(position.step)
            torch.manual_seed(item_seed(run.seed, position.step, ctx.rank * 1009 + accumulated, purpose=1))
            last_micro = accumulated + 1 == optim.update_freq
            sync = nullcontext() if (last_micro or not ctx.enabled) else step_module.no_sync()
            with sync:
                with autocast():
                    result = step_module(waves, generators_for(batch["keys"]))
                finite = math.isfinite(float(result.loss.detach()))
                bad = ctx.any_flag(not finite)  # every rank takes the same branch
                if bad:  # zero gradients that still visit every parameter, so DDP's reducer stays in step
                    loss = sum((p * 0.0).sum() for p in model.parameters() if p.requires_grad)
                else:
                    loss = result.loss / optim.update_freq
                loss.backward()
            accumulated += 1
            stats["micro"] += 1
            stats["loss"] += float(result.loss.detach()) if finite else 0.0
            stats["targets"] += result.num_targets
            stats["correct"] += result.correct
            stats["audio_s"] += waves.numel() / data.sample_rate
            stats["code_ppl"] += float(result.code_perplexity)
            stats["prob_ppl"] += float(result.prob_perplexity)
            if bad:
                accumulated = optim.update_freq  # the whole update is void
            if accumulated < optim.update_freq:
                continue
            accumulated = 0
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), optim.clip_norm or float("inf"))
            if bad or not math.isfinite(float(grad_norm)):
                optimizer.zero_grad(set_to_none=True)
                position.bad_streak += 1
                position.skipped_total += 1
                monitor.message(f"non-finite loss or gradient at update {position.step}: step skipped "
                                f"({position.bad_streak} in a row, {position.skipped_total} in total)")
                if position.bad_streak >= run.max_bad_steps:
                    raise TrainingError(f"aborting: {position.bad_streak} consecutive non-finite steps at update "
                                        f"{position.step}; the weights were left unchanged (last checkpoint: "
                                        f"{manager.latest()}). Lower optim.lr or check the data.")
                continue
            position.bad_streak = 0
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            position.step += 1
            monitor.advance({"loss": float(result.loss.detach()), "acc": result.correct / max(result.num_targets, 1)})
            if position.step % run.log_every == 0:
                _log(monitor, ctx, position, stats, scheduler, grad_norm, result)
                stats = _interval_stats()
            out_of_time = run.max_time_s > 0 and ctx.any_flag(time.time() - started > run.max_time_s)
            out_of_time = out_of_time or (run.stop_after > 0 and position.step - first_step >= run.stop_after)
            done = position.step >= optim.max_updates
            if position.step % run.save_every == 0 or out_of_time or done:
                save(final=out_of_time or done)
            if out_of_time:
                monitor.message(f"stopping at update {position.step} (run.max_time_s / run.stop_after reached)")
                stop = True
            if stop or done:
                break
        else:
            position.epoch += 1
            position.batch = 0
    monitor.close()
    return manager.latest()


def _log(monitor, ctx, position, stats, scheduler, grad_norm, result) -> None:
    totals = ctx.sum_floats([stats["loss"], stats["micro"], stats["targets"], stats["correct"], stats["audio_s"]])
    loss, micro, targets, correct, audio = totals
    elapsed = max(time.time() - stats["start"], 1e-9)
    monitor.scalars(position.step, {
        "loss": loss / max(micro, 1),
        "accuracy": correct / max(targets, 1),
        "code_perplexity": stats["code_ppl"] / max(stats["micro"], 1),
        "prob_perplexity": stats["prob_ppl"] / max(stats["micro"], 1),
        "temperature": float(result.temperature),
        "lr": scheduler.get_last_lr()[0],
        "grad_norm": float(grad_norm),
        "audio_s_per_s": audio / elapsed,
        "skipped_batches": stats["skipped"],
        "unreadable": stats["failed"],
    })
