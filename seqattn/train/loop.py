"""What every trainer shares: the run skeleton and the update loop.

A trainer (pretraining, CTC fine-tuning, language models) builds its model, optimizer and schedule into a
:class:`TrainingState`, opens a :class:`TrainingRun` (output directory, checkpoints, resume, progress and
logs), writes what it has to say, and calls :meth:`TrainingRun.train` with its :class:`Task`: what an epoch's
batches are and how one micro-batch turns into a loss. The loop does the rest the same way for all of them:

- ``update_freq`` micro-batches per update (DDP gradients are synchronised on the last one only);
- a non-finite loss or gradient on any rank skips the whole update on every rank, and too many in a row
  abort with a clear message, the weights untouched;
- checkpoints every ``save_every`` updates and at the end, atomic, with the data position, so a resumed
  run continues at the next micro-batch with the same random draws (the RNG is reseeded per update);
- the model and every batch on ``run.device`` (auto | cpu | cuda | cuda:N; pinned memory and non-blocking copies
  on GPUs), the forward pass under ``run.precision`` (bf16 autocast by default on GPUs that have it; fp16 with a
  gradient scaler, whose overflows lower the scale and skip the update without counting as bad steps).
  Checkpoints are device-free: weights are saved from the CPU and loaded onto whatever device resumes.

The loop changes only the :class:`TrainingState` it is given (model, optimizer, schedule and
:class:`Position`), and a checkpoint saves exactly that state.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seqattn.errors import SeqattnError
from seqattn.nn import native_band
from seqattn.utils.device import autocast, gradient_scaler, resolve_precision, to_device

from .checkpoint import CheckpointManager, load_checkpoint
from .config_io import to_plain
from .distributed import DistributedContext, init_distributed, shutdown_distributed
from .monitor import TrainMonitor

_clock = time.monotonic  # what training time is measured with (tests replace it with a fake clock)


class TrainingError(SeqattnError, RuntimeError):
    """A training run that cannot go on (clear message, no traceback needed)."""


@dataclass
class OptimConfig:
    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    weight_decay: float = 0.01
    warmup_updates: int = 32000
    max_updates: int = 400000
    end_lr_ratio: float = 0.0
    power: float = 1.0
    clip_norm: float = 10.0  # 0: no clipping
    update_freq: int = 1  # micro-batches accumulated per update
    # A schedule in training time as well as in updates: the learning-rate schedule advances by whichever of
    # ``step / max_updates`` and ``trained seconds / schedule_time_s`` is further along, and training ends when
    # either is spent. A time-budgeted run then anneals its rate before it stops on any machine, fast or slow
    # (with ``run.max_time_s`` alone, a slow machine stops mid-schedule). Seconds are wall time over every
    # resumed invocation (validation and checkpoints included), averaged over ranks. 0 = by updates only.
    schedule_time_s: float = 0.0


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
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)
    precision: str = "auto"  # auto (bf16 on GPUs that support it, else fp32) | fp32 | bf16 | fp16 (+ grad scaler)
    tf32: bool = False  # TF32 matmuls and convolutions on Ampere+ GPUs (faster fp32, 10-bit mantissa inputs)
    compile: bool = False  # torch.compile the model's forward


@dataclass
class Position:
    """Where the run stands: updates done and the next micro-batch of the epoch plan."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    bad_streak: int = 0
    skipped_total: int = 0
    trained_s: float = 0.0  # wall seconds of training so far, over every invocation (optim.schedule_time_s)


@dataclass
class TrainingState:
    """Everything an update changes and a checkpoint keeps."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    position: Position = field(default_factory=Position)


@dataclass
class StepOutput:
    loss: torch.Tensor  # what is back-propagated (already normalised for this micro-batch)
    statistics: dict  # the task's own summable numbers for its log line (tensors on the device, or host numbers):
    # the loop sums them over micro-batches and ranks on the device and hands the totals back to
    # Task.log_values as floats, read from the device once per log line
    postfix: dict = field(default_factory=dict)  # shown on the progress bar (read at log lines only)


@dataclass
class Interval:
    """What happened between two log lines: the task's summed statistics and the loop's own counts.

    The sums stay on the device (float64 scalars) and leave out micro-batches whose loss was not finite
    without asking the host which those were; :meth:`totals` reads them all in one transfer."""

    statistics: dict = field(default_factory=dict)  # device sums over the micro-batches with a finite loss
    micro_batches: torch.Tensor | None = None  # device count of those micro-batches
    skipped_batches: int = 0  # batches every rank skipped (nothing to train on)
    unreadable: int = 0  # inputs that could not be read
    started: float = field(default_factory=time.time)

    def add(self, statistics: dict, finite: torch.Tensor) -> None:
        """Add one micro-batch's statistics where its ``finite`` flag (a device bool scalar) holds."""
        zero = torch.zeros((), dtype=torch.float64, device=finite.device)
        self.micro_batches = (zero if self.micro_batches is None else self.micro_batches) + finite
        for key, value in statistics.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().to(torch.float64)
            else:  # a host number becomes a device scalar by a fill (no copy, no wait)
                value = torch.full((), float(value), dtype=torch.float64, device=finite.device)
            self.statistics[key] = self.statistics.get(key, zero) + torch.where(finite, value, zero)

    def totals(self, ctx: DistributedContext) -> tuple[dict, float]:
        """(statistics, micro-batches) summed over ranks, as floats: the one device read of a log line."""
        keys = sorted(self.statistics)
        if self.micro_batches is None:
            return {key: 0.0 for key in keys}, 0.0
        stacked = torch.stack([self.statistics[key] for key in keys] + [self.micro_batches])
        values = ctx.sum_tensor(stacked).tolist()
        return dict(zip(keys, values[:-1])), values[-1]


class Task:
    """What a trainer plugs into :meth:`TrainingRun.train`."""

    step_module: torch.nn.Module | None = None  # computes the loss in its forward (DDP-wrapped when distributed);
    # run.compile compiles it

    def host_prepare(self, batch):
        """Work on the host batch before it goes to the device: random draws from per-utterance generators
        (masks, negatives), and lengths that must stay on the host (CTC's). Returns the batch to move."""
        return batch

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

    def log_values(self, statistics: dict, micro_batches: float, elapsed: float) -> dict:
        """Scalars to log from the statistics summed over the last ``log_every`` updates and all ranks;
        ``micro_batches`` is how many micro-batches (over all ranks) they came from."""
        return {}

    def validate(self, step: int) -> float | None:
        """Run validation (called every ``validate_every`` updates); returns the metric to keep the best by."""
        return None


class TrainingRun:
    """The skeleton of one training run: checkpoints in ``run.output_dir``, resume from the newest complete
    one, progress bar and logs, then the update loop. ``config`` is the trainer's dataclass config, with
    ``optim`` (:class:`OptimConfig`) and ``run`` (:class:`RunConfig`) sections; it is saved as config.json
    and inside every checkpoint's training state."""

    def __init__(self, name: str, config, ctx: DistributedContext, state: TrainingState, *, command: str,
                 extra_files: dict | None = None, higher_is_better: bool = False):
        self.config, self.ctx, self.state = config, ctx, state
        self.optim: OptimConfig = config.optim
        self.run: RunConfig = config.run
        self.command, self.extra_files, self.higher_is_better = command, extra_files, higher_is_better
        self.out = Path(self.run.output_dir)
        self.manager = CheckpointManager(self.out / "checkpoints", self.run.keep_last)
        self.device = ctx.device
        self.precision = resolve_precision(self.run.precision, self.device)
        self.scaler = gradient_scaler(self.precision, self.device)
        if self.device.type == "cuda" and self.run.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        state.model.to(self.device)  # parameters keep their identity, so the optimizer still holds them
        resumed_from = resume(self.manager, state, self.scaler)
        self.monitor = TrainMonitor(self.out, ctx.is_main, self.optim.max_updates, state.position.step, name,
                                    self.run.tensorboard)
        if resumed_from is not None:
            position = state.position
            self.monitor.message(f"resumed from {resumed_from} at update {position.step} (epoch {position.epoch}, "
                                 f"batch {position.batch})")
        self.config_json = json.dumps(to_plain(config), indent=2)  # also inside every checkpoint's training state
        if ctx.is_main:
            (self.out / "config.json").write_text(self.config_json)
        self.monitor.message(f"device {self.device}, precision {self.precision}"
                             + (", tf32" if self.device.type == "cuda" and self.run.tf32 else "")
                             + (", compiled" if self.run.compile else "")
                             + (f", local windows: {native_band.describe()}" if self.device.type == "cpu" else ""))

    def autocast(self):
        """The forward pass's autocast context for this run's device and precision."""
        return autocast(self.precision, self.device)

    def train(self, task: Task, *, num_workers: int = 0, validate_every: int = 0,
              describe_epoch: Callable | None = None) -> None:
        """Run updates until ``optim.max_updates`` (or ``optim.schedule_time_s``), ``run.max_time_s`` or
        ``run.stop_after``; closes the logs."""
        self.state.model.train()
        if self.run.compile and task.step_module is not None:
            task.step_module = torch.compile(task.step_module)  # the loss computation, DDP wrapper included
        try:
            UpdateLoop(self, task, num_workers, validate_every, describe_epoch).run()
        finally:
            self.monitor.close()

    def save(self, final: bool = False, metric: float | None = None) -> Path | None:
        """Checkpoint the state (rank 0 writes; every rank waits)."""
        path, state = None, self.state
        if self.ctx.is_main:
            training_state = {"optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
                              "position": state.position.__dict__.copy(), "config": self.config_json}
            if self.scaler is not None:
                training_state["scaler"] = self.scaler.state_dict()
            try:
                path = self.manager.save(state.model, training_state, state.position.step, metric,
                                         higher_is_better=self.higher_is_better, extra_files=self.extra_files,
                                         command=self.command)
            except OSError as error:
                raise TrainingError(f"could not write checkpoint at update {state.position.step}: {error}; the "
                                    f"previous checkpoint ({self.manager.latest()}) is intact") from None
            self.monitor.message(f"saved checkpoint {path}" + (" (final)" if final else ""))
        self.ctx.barrier()
        return path

    def result(self) -> Path | None:
        """The best checkpoint (by the validation metric) or, without one, the newest."""
        return self.manager.best() or self.manager.latest()


class UpdateLoop:
    """The update loop of one :meth:`TrainingRun.train` call; its own state is the update being accumulated."""

    def __init__(self, run: TrainingRun, task: Task, num_workers: int, validate_every: int,
                 describe_epoch: Callable | None):
        self.training, self.task, self.state, self.ctx = run, task, run.state, run.ctx
        self.device, self.scaler = run.device, run.scaler
        self.optim, self.config, self.monitor = run.optim, run.run, run.monitor
        self.num_workers, self.validate_every, self.describe_epoch = num_workers, validate_every, describe_epoch
        self.accumulated = 0
        self.bad: torch.Tensor | None = None  # device flag: a micro-batch of this update had a non-finite loss
        self.consumed: list[int] = []  # micro-batches of the epoch that went into the update being accumulated
        self.interval = Interval()
        self.postfix: dict = {}  # the last micro-batch's progress-bar values
        self.started, self.first_step = time.time(), run.state.position.step
        self.clock_mark = _clock()

    def run(self) -> None:
        position = self.state.position
        self.state.optimizer.zero_grad(set_to_none=True)
        # (a resumed run may have nothing left)
        while position.step < self.optim.max_updates and not self._time_spent():
            dataset = self.task.epoch_dataset(position.epoch)
            if len(dataset) == 0:
                raise TrainingError(
                    f"epoch {position.epoch} has no batches: the training data is smaller than one batch"
                )
            if self.describe_epoch is not None and position.batch == 0:
                self.describe_epoch(position.epoch, dataset)
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=None,
                sampler=range(position.batch, len(dataset)),
                num_workers=self.num_workers,
                collate_fn=lambda b: b,
                pin_memory=self.device.type == "cuda",
            )
            for batch in loader:
                position.batch = batch["batch_index"] + 1
                if self._micro_batch(batch) and self._finish_update():
                    return
            position.epoch += 1
            position.batch = 0

    def _micro_batch(self, batch) -> bool:
        """Forward and backward of one micro-batch; True when it completes an update's accumulation."""
        position, ctx = self.state.position, self.ctx
        for failure in batch.get("failed", []):
            self.monitor.message(f"skipped unreadable input {failure}")
        self.interval.unreadable += len(batch.get("failed", []))
        if ctx.any_flag(self.task.is_empty(batch)):
            self.interval.skipped_batches += 1
            return False
        self.task.before_update(position.step)
        self.consumed.append(batch["batch_index"])
        torch.manual_seed((self.config.seed * 1_000_003 + position.step) * 4099 + ctx.rank * 131 + self.accumulated)
        batch = to_device(self.task.host_prepare(batch), self.device)
        last_micro = self.accumulated + 1 == self.optim.update_freq
        with nullcontext() if (last_micro or not ctx.enabled) else self.task.no_sync():
            with self.training.autocast():
                output = self.task.forward(batch)
            # No host read here: a non-finite loss back-propagates zeros through the same graph (so DDP's
            # reducer sees exactly the parameters a good step uses) and flags the update, which is skipped
            # on every rank when it completes.
            finite = torch.isfinite(output.loss.detach())
            loss = torch.where(finite, output.loss, torch.zeros_like(output.loss)) / self.optim.update_freq
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        self.bad = ~finite if self.bad is None else self.bad | ~finite
        self.accumulated += 1
        self.interval.add(output.statistics, finite)  # a skipped micro-batch's numbers would poison the log line
        self.postfix = output.postfix
        if self.accumulated < self.optim.update_freq:
            return False
        self.accumulated = 0
        return True

    def _update_flags(self, grad_norm: torch.Tensor) -> tuple[bool, bool]:
        """(some micro-batch's loss was not finite on some rank, the gradient norm is not finite): the one
        device-to-host read of an update, which decides whether the optimizer steps."""
        flags = torch.stack([self.bad, ~torch.isfinite(grad_norm)]).to(torch.int32)
        bad_loss, bad_gradient = self.ctx.max_tensor(flags).tolist()
        return bool(bad_loss), bool(bad_gradient)

    def _finish_update(self) -> bool:
        """Clip and step (or skip a non-finite update), then log, validate and save; True when the run ends."""
        state, position = self.state, self.state.position
        if self.scaler is not None:
            self.scaler.unscale_(state.optimizer)  # clip and check the true gradients
        grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), self.optim.clip_norm or float("inf"))
        bad_loss, bad_gradient = self._update_flags(grad_norm)
        self.bad = None
        if bad_loss or bad_gradient:
            overflow = self.scaler is not None and not bad_loss  # fp16 overflow: the scaler's job, not a bad step
            self.monitor.trace(position.step, position.epoch, self.consumed, applied=False)
            self.consumed = []
            if self.scaler is not None:
                self.scaler.update()  # an overflow lowers the scale
            if overflow:
                state.optimizer.zero_grad(set_to_none=True)
                self.monitor.message(
                    f"fp16 gradient overflow at update {position.step}: update skipped, loss scale "
                    f"now {self.scaler.get_scale():g}"
                )
            else:
                self._skip()
            return False
        position.bad_streak = 0
        if self.scaler is not None:
            self.scaler.step(state.optimizer)
            self.scaler.update()
        else:
            state.optimizer.step()
        self._count_training_time()
        self._advance_schedule()
        state.optimizer.zero_grad(set_to_none=True)
        position.step += 1
        self.monitor.trace(position.step, position.epoch, self.consumed, applied=True)
        self.consumed = []
        self.monitor.advance()
        if position.step % self.config.log_every == 0:
            self._log(grad_norm)
        out_of_time = self.config.max_time_s > 0 and self.ctx.any_flag(
            time.time() - self.started > self.config.max_time_s
        )
        out_of_time = out_of_time or (
            self.config.stop_after > 0 and position.step - self.first_step >= self.config.stop_after
        )
        time_spent = self._time_spent()
        done = position.step >= self.optim.max_updates or time_spent
        metric = None
        # The last model is validated too, so that "best" can be the final one.
        if self.validate_every and (position.step % self.validate_every == 0 or out_of_time or done):
            metric = self.task.validate(position.step)
        if position.step % self.config.save_every == 0 or out_of_time or done or metric is not None:
            self.training.save(out_of_time or done, metric)
        if out_of_time:
            self.monitor.message(f"stopping at update {position.step} (run.max_time_s / run.stop_after reached)")
        elif time_spent and position.step < self.optim.max_updates:
            self.monitor.message(
                f"schedule done at update {position.step}: {position.trained_s:.0f} s of training "
                f"reached optim.schedule_time_s={self.optim.schedule_time_s:g}"
            )
        return out_of_time or done

    def _time_spent(self) -> bool:
        """True once a time schedule (``optim.schedule_time_s``) has had all of its training time."""
        return 0 < self.optim.schedule_time_s <= self.state.position.trained_s

    def _count_training_time(self) -> None:
        """Add the wall time since the last update to ``position.trained_s``; with a time schedule the ranks'
        times are averaged, so that every rank sets the same learning rate and stops at the same update."""
        now = _clock()
        elapsed, self.clock_mark = now - self.clock_mark, now
        if self.optim.schedule_time_s > 0 and self.ctx.enabled:
            elapsed = self.ctx.sum_floats([elapsed])[0] / self.ctx.world_size
        self.state.position.trained_s += elapsed

    def _advance_schedule(self) -> None:
        """Step the learning-rate schedule: one update on, or (``optim.schedule_time_s``) as far as the training
        time has gone, counted in the updates that ``max_updates`` spreads over that time."""
        scheduler, optim = self.state.scheduler, self.optim
        if optim.schedule_time_s > 0:
            by_time = int(self.state.position.trained_s / optim.schedule_time_s * optim.max_updates)
            # LRScheduler.step() moves last_epoch on by one, to max(updates done, updates the time is worth)
            scheduler.last_epoch = max(scheduler.last_epoch, min(by_time, optim.max_updates) - 1)
        scheduler.step()

    def _log(self, grad_norm: torch.Tensor) -> None:
        interval = self.interval
        statistics, micro = interval.totals(self.ctx)  # one device read per log line
        skipped, unreadable = self.ctx.sum_floats([float(interval.skipped_batches), float(interval.unreadable)])
        values = self.task.log_values(statistics, micro, max(time.time() - interval.started, 1e-9))
        values.update(
            lr=self.state.scheduler.get_last_lr()[0],
            grad_norm=float(grad_norm),
            skipped_batches=skipped,
            unreadable=unreadable,
        )
        self.monitor.scalars(self.state.position.step, values)
        self.monitor.advance(0, {key: float(value) for key, value in self.postfix.items()})
        self.interval = Interval()

    def _skip(self) -> None:
        position = self.state.position
        self.state.optimizer.zero_grad(set_to_none=True)
        position.bad_streak += 1
        position.skipped_total += 1
        self.monitor.message(
            f"non-finite loss or gradient at update {position.step}: step skipped "
            f"({position.bad_streak} in a row, {position.skipped_total} in total)"
        )
        if position.bad_streak >= self.config.max_bad_steps:
            raise TrainingError(
                f"aborting: {position.bad_streak} consecutive non-finite steps at update "
                f"{position.step}; the weights were left unchanged since the last good update. "
                "Lower optim.lr or check the data."
            )


def check_sources(paths: list[str], what: str) -> None:
    """Fail before any training starts when data is missing."""
    if not paths:
        raise TrainingError(
            f"data.train is empty: give at least one {what} data dir or manifest, e.g. "
            "data.train='[{path: data/train_hi, language: hi}]'"
        )
    for path in paths:
        base = Path(str(path).partition("?")[0])  # an HF dataset spec's query picks split and columns
        if not base.exists() and not any(base.parent.glob(base.name)):
            raise TrainingError(f"data source {path} does not exist")


def launch(train_fn, config, command: str):
    """Run ``train_fn(config, ctx, command)`` inside an initialised (and afterwards destroyed) process group on
    ``run.device``; ``run.threads`` sets torch's intra-op threads first."""
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    ctx = init_distributed(config.run.device)
    try:
        return train_fn(config, ctx, command)
    finally:
        shutdown_distributed(ctx)


def adamw(params, optim: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        params, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps, weight_decay=optim.weight_decay
    )


def resume(manager: CheckpointManager, state: TrainingState, scaler=None) -> Path | None:
    """Load the newest complete checkpoint, if any, into ``state`` (its position included) and the fp16
    ``scaler``; returns its path. Weights and states come in on the CPU and go to the model's device."""
    if manager.directory.is_dir():
        manager.remove_stale()
    path = manager.latest()
    if path is None:
        return None
    try:
        saved = load_checkpoint(path, state.model)
    except Exception as error:  # broad on purpose: unpickling refusals, truncation, mismatched weights
        first = str(error).strip().splitlines()
        reason = next((line for line in first if "GLOBAL" in line), first[0] if first else type(error).__name__)
        raise TrainingError(
            f"cannot resume from {path}: {reason.strip()} (nothing in it was executed); move the "
            "directory away to resume from an older checkpoint"
        ) from None
    try:
        if not isinstance(saved, dict):
            raise TypeError(f"it holds a {type(saved).__name__}, not a mapping")
        state.optimizer.load_state_dict(saved["optimizer"])
        state.scheduler.load_state_dict(saved["scheduler"])
        state.position = Position(**saved["position"])
        if scaler is not None and "scaler" in saved:
            scaler.load_state_dict(saved["scaler"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as error:  # any malformed entry
        raise TrainingError(
            f"cannot resume from {path}: its training_state.pt does not match this run's optimizer "
            f"or schedule ({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
            "resume with the config that wrote it, or move the directory away"
        ) from None
    return path
