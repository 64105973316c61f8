"""The update loop shared by every trainer: accumulation, non-finite skipping, clipping, logging, checkpoints.

A trainer supplies a :class:`Task` (what an epoch's batches are and how one micro-batch turns into a loss);
:func:`run_updates` does the rest the same way for pretraining, fine-tuning and language models:

- ``update_freq`` micro-batches per update (DDP gradients are synchronised on the last one only);
- a non-finite loss or gradient on any rank skips the whole update on every rank, and too many in a row
  abort with a clear message, the weights untouched;
- checkpoints every ``save_every`` updates and at the end, atomic, with the data position, so a resumed
  run continues at the next micro-batch with the same random draws (the RNG is reseeded per update).
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from seqattn.errors import SeqattnError
from .distributed import DistributedContext, init_distributed, shutdown_distributed
from .monitor import TrainMonitor


class TrainingError(SeqattnError, RuntimeError):
    """A training run that cannot go on (clear message, no traceback needed)."""


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
    output_dir: str = "exp/run"
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
class Position:
    """Where the run stands: updates done and the next micro-batch of the epoch plan."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    bad_streak: int = 0
    skipped_total: int = 0


@dataclass
class StepOutput:
    loss: torch.Tensor  # what is back-propagated (already normalised for this micro-batch)
    sums: dict  # summable statistics of the micro-batch (summed over ranks when logged)
    postfix: dict = field(default_factory=dict)  # shown on the progress bar


class Task:
    """What a trainer plugs into :func:`run_updates`."""

    def epoch_dataset(self, epoch: int):
        """An indexable dataset whose item i is this rank's share of micro-batch i of the epoch."""
        raise NotImplementedError

    def is_empty(self, batch) -> bool:
        """True when this rank has nothing to train on in ``batch`` (every rank then skips it)."""
        raise NotImplementedError

    def forward(self, batch) -> StepOutput:
        raise NotImplementedError

    def before_update(self, step: int) -> None:
        """Schedules that depend on the update count (temperatures, freezing)."""

    def no_sync(self):
        """Context in which DDP skips the gradient all-reduce (accumulation micro-batches)."""
        return nullcontext()

    def log_values(self, sums: dict, elapsed: float) -> dict:
        """Scalars to log from the summed statistics of the last ``log_every`` updates."""
        return {}

    def validate(self, step: int) -> float | None:
        """Run validation (called every ``validate_every`` updates); returns the metric to keep the best by."""
        return None


def run_updates(task: Task, model: torch.nn.Module, optimizer, scheduler, position: Position, optim: OptimConfig,
                run: RunConfig, ctx: DistributedContext, monitor: TrainMonitor, save: Callable[[bool, float | None], None],
                num_workers: int = 0, validate_every: int = 0, describe_epoch: Callable | None = None) -> None:
    started, first_step = time.time(), position.step
    sums, interval_start = {}, time.time()
    accumulated, bad = 0, False
    consumed: list[int] = []  # micro-batches of the epoch that went into the update being accumulated
    optimizer.zero_grad(set_to_none=True)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if optim.bf16 else nullcontext
    while position.step < optim.max_updates:
        dataset = task.epoch_dataset(position.epoch)
        if len(dataset) == 0:
            raise TrainingError(f"epoch {position.epoch} has no batches: the training data is smaller than one batch")
        if describe_epoch is not None and position.batch == 0:
            describe_epoch(position.epoch, dataset)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=range(position.batch, len(dataset)),
                                             num_workers=num_workers, collate_fn=lambda b: b)
        finished = False
        for batch in loader:
            position.batch = batch["batch_index"] + 1
            for failure in batch.get("failed", []):
                monitor.message(f"skipped unreadable input {failure}")
            sums["unreadable"] = sums.get("unreadable", 0) + len(batch.get("failed", []))
            if ctx.any_flag(task.is_empty(batch)):
                sums["skipped_batches"] = sums.get("skipped_batches", 0) + 1
                continue
            task.before_update(position.step)
            consumed.append(batch["batch_index"])
            torch.manual_seed((run.seed * 1_000_003 + position.step) * 4099 + ctx.rank * 131 + accumulated)
            last_micro = accumulated + 1 == optim.update_freq
            with nullcontext() if (last_micro or not ctx.enabled) else task.no_sync():
                with autocast():
                    output = task.forward(batch)
                finite = math.isfinite(float(output.loss.detach()))
                bad_here = ctx.any_flag(not finite)  # every rank takes the same branch
                if bad_here:  # zero gradients that still visit every parameter, so DDP's reducer stays in step
                    loss = sum((p * 0.0).sum() for p in model.parameters() if p.requires_grad)
                else:
                    loss = output.loss / optim.update_freq
                loss.backward()
            bad = bad or bad_here
            accumulated = optim.update_freq if bad_here else accumulated + 1
            sums["micro"] = sums.get("micro", 0) + 1
            for key, value in output.sums.items():
                sums[key] = sums.get(key, 0.0) + (value if finite or key != "loss" else 0.0)
            if accumulated < optim.update_freq:
                continue
            accumulated = 0
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), optim.clip_norm or float("inf"))
            if bad or not math.isfinite(float(grad_norm)):
                bad = False
                monitor.trace(position.step, position.epoch, consumed, applied=False)
                consumed = []
                _skip(position, optimizer, monitor, run)
                continue
            position.bad_streak = 0
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            position.step += 1
            monitor.trace(position.step, position.epoch, consumed, applied=True)
            consumed = []
            monitor.advance(output.postfix)
            if position.step % run.log_every == 0:
                keys = sorted(sums)
                totals = dict(zip(keys, ctx.sum_floats([float(sums[k]) for k in keys])))
                values = task.log_values(totals, max(time.time() - interval_start, 1e-9))
                values.update(lr=scheduler.get_last_lr()[0], grad_norm=float(grad_norm),
                              skipped_batches=totals.get("skipped_batches", 0), unreadable=totals.get("unreadable", 0))
                monitor.scalars(position.step, values)
                sums, interval_start = {}, time.time()
            out_of_time = run.max_time_s > 0 and ctx.any_flag(time.time() - started > run.max_time_s)
            out_of_time = out_of_time or (run.stop_after > 0 and position.step - first_step >= run.stop_after)
            done = position.step >= optim.max_updates
            metric = None
            # The last model is validated too, so that "best" can be the final one.
            if validate_every and (position.step % validate_every == 0 or out_of_time or done):
                metric = task.validate(position.step)
            if position.step % run.save_every == 0 or out_of_time or done or metric is not None:
                save(out_of_time or done, metric)
            if out_of_time:
                monitor.message(f"stopping at update {position.step} (run.max_time_s / run.stop_after reached)")
            if out_of_time or done:
                finished = True
                break
        if finished:
            return
        position.epoch += 1
        position.batch = 0


def _skip(position: Position, optimizer, monitor: TrainMonitor, run: RunConfig) -> None:
    optimizer.zero_grad(set_to_none=True)
    position.bad_streak += 1
    position.skipped_total += 1
    monitor.message(f"non-finite loss or gradient at update {position.step}: step skipped "
                    f"({position.bad_streak} in a row, {position.skipped_total} in total)")
    if position.bad_streak >= run.max_bad_steps:
        raise TrainingError(f"aborting: {position.bad_streak} consecutive non-finite steps at update "
                            f"{position.step}; the weights were left unchanged since the last good update. "
                            "Lower optim.lr or check the data.")


def checkpoint_saver(manager, model, optimizer, scheduler, position: Position, ctx: DistributedContext,
                     monitor: TrainMonitor, command: str, config_json: str, higher_is_better: bool = False,
                     extra_files: dict | None = None):
    """A ``save(final, metric)`` callable for :func:`run_updates` (rank 0 writes; every rank waits)."""

    def save(final: bool = False, metric: float | None = None) -> Path | None:
        path = None
        if ctx.is_main:
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "position": position.__dict__.copy(), "config": config_json}
            try:
                path = manager.save(model, state, position.step, metric, higher_is_better=higher_is_better,
                                    extra_files=extra_files, command=command)
            except OSError as error:
                raise TrainingError(f"could not write checkpoint at update {position.step}: {error}; the previous "
                                    f"checkpoint ({manager.latest()}) is intact") from None
            monitor.message(f"saved checkpoint {path}" + (" (final)" if final else ""))
        ctx.barrier()
        return path

    return save


def check_sources(paths: list[str], what: str) -> None:
    """Fail before any training starts when data is missing."""
    if not paths:
        raise TrainingError(f"data.train is empty: give at least one {what} data dir or manifest, e.g. "
                            "data.train='[{path: data/train_hi, language: hi}]'")
    for path in paths:
        if not Path(path).exists():
            raise TrainingError(f"data source {path} does not exist")


def launch(train_fn, config, command: str):
    """Run ``train_fn(config, ctx, command)`` inside an initialised (and afterwards destroyed) process group."""
    ctx = init_distributed()
    try:
        return train_fn(config, ctx, command)
    finally:
        shutdown_distributed(ctx)


def adamw(params, optim: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                             weight_decay=optim.weight_decay)


def resume(manager, model, optimizer, scheduler) -> tuple[Position, Path | None]:
    """Load the newest complete checkpoint, if any, into model/optimizer/scheduler."""
    from .checkpoint import load_checkpoint

    if manager.directory.is_dir():
        manager.remove_stale()
    path = manager.latest()
    if path is None:
        return Position(), None
    try:
        state = load_checkpoint(path, model)
    except Exception as error:  # noqa: BLE001 - unpickling refusals, truncation, mismatched weights
        first = str(error).strip().splitlines()
        reason = next((line for line in first if "GLOBAL" in line), first[0] if first else type(error).__name__)
        raise TrainingError(f"cannot resume from {path}: {reason.strip()} (nothing in it was executed); move the "
                            "directory away to resume from an older checkpoint") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return Position(**state["position"]), path
