"""Language-model training: ``seqattn train-lm CONFIG.yaml [key=value ...]``.

Reads top to bottom: configuration; tokenizer (learnt from the training text, or reused); the corpus
tokenized once into memory-mapped token files; model and optimiser; resume; then the shared update loop
(:mod:`seqattn.train.loop`: accumulation, non-finite skipping, clipping, bf16 autocast, atomic checkpoints,
exact resume, torchrun DDP) with validation loss/perplexity every ``validate_every`` updates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from seqattn.data.lm_corpus import CorpusError, PackedBatches, blocks, tokenize_files
from seqattn.data.lm_tokenizers import (
    TOKENIZER_FILE,
    TokenizerConfig,
    TokenizerError,
    load_tokenizer,
    tokenizer_to_json,
    train_tokenizer,
)
from seqattn.models.lm import LMConfig, TransformerLM
from seqattn.utils.device import module_device

from .distributed import DistributedContext
from .loop import OptimConfig, RunConfig, StepOutput, Task, TrainingError, TrainingRun, TrainingState, adamw, launch
from .monitor import TrainMonitor
from .schedule import cosine, polynomial_decay, rsqrt

__all__ = ["LMData", "LMTrainConfig", "train"]


@dataclass
class LMData:
    train: list[str] = field(default_factory=list)  # text files
    valid: list[str] = field(default_factory=list)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenizer_from: str | None = None  # a directory holding tokenizer.json to reuse instead of training one
    seq_len: int = 256  # tokens per training sequence
    batch_size: int = 32  # sequences per update (over all processes, before accumulation)
    valid_tokens: int = 0  # score at most this many validation tokens (0 = all)


@dataclass
class LMTrainConfig:
    model: LMConfig = field(default_factory=LMConfig)
    data: LMData = field(default_factory=LMData)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, betas=[0.9, 0.99], eps=1e-8,
                                                                   weight_decay=0.1, warmup_updates=100,
                                                                   max_updates=5000, clip_norm=1.0))
    schedule: str = "cosine"  # cosine (to end_lr_ratio), rsqrt, or polynomial
    validate_every: int = 500
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="exp/lm"))


class LossStep(nn.Module):
    """Puts the loss inside ``forward`` so DDP sees it."""

    def __init__(self, model: TransformerLM):
        super().__init__()
        self.model = model

    def forward(self, tokens):
        return self.model.loss(tokens[:, :-1], tokens[:, 1:])


class LMTask(Task):
    def __init__(self, config: LMTrainConfig, model: TransformerLM, train_tokens, valid_tokens, ctx: DistributedContext,
                 monitor: TrainMonitor):
        self.config, self.model, self.ctx, self.monitor = config, model, ctx, monitor
        self.train_tokens, self.valid_tokens = train_tokens, valid_tokens
        step = LossStep(model)
        if ctx.enabled:  # centroids stay identical through their own all-reduce, not by copying rank 0's
            step = DistributedDataParallel(step, device_ids=ctx.device_ids, broadcast_buffers=False)
        self.step_module = step

    def epoch_dataset(self, epoch: int):
        data = self.config.data
        try:
            return PackedBatches(self.train_tokens, data.seq_len, data.batch_size, epoch, self.config.run.seed,
                                 self.ctx.rank, self.ctx.world_size)
        except CorpusError as error:
            raise TrainingError(str(error)) from None

    def is_empty(self, batch) -> bool:
        return batch["tokens"].shape[0] == 0

    def no_sync(self):
        return self.step_module.no_sync()

    def forward(self, batch) -> StepOutput:
        tokens = batch["tokens"]
        nll, loss = self.step_module(tokens)
        count = tokens.shape[0] * (tokens.shape[1] - 1)
        return StepOutput(loss, {"nll": nll.detach() * count, "tokens": count}, {"loss": nll.detach()})

    def log_values(self, statistics: dict, micro_batches: float, elapsed: float) -> dict:
        nll = statistics["nll"] / max(statistics["tokens"], 1)
        return {"loss": nll, "ppl": math.exp(min(nll, 50)), "tokens_per_s": statistics["tokens"] / elapsed}

    @torch.no_grad()
    def validate(self, step: int) -> float | None:
        if self.valid_tokens is None:
            return None
        model = self.model
        was_training = model.training
        model.eval()
        spans = blocks(self.valid_tokens, self.config.data.seq_len)
        if self.config.data.valid_tokens:
            spans = spans[: max(1, self.config.data.valid_tokens // self.config.data.seq_len)]
        device = module_device(model)
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0  # the loss sum stays on the device
        for start, stop in spans[self.ctx.rank :: self.ctx.world_size]:
            window = torch.from_numpy(self.valid_tokens[start : stop + 1].astype("int64"))[None]  # (1, n + 1)
            window = window.to(device, non_blocking=True)
            logits = model(window[:, :-1]).logits.float()
            total += torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum")
            count += window.shape[1] - 1
        total = float(self.ctx.sum_tensor(total))  # one device read for the whole validation
        count = self.ctx.sum_floats([float(count)])[0]
        model.train(was_training)
        loss = total / max(count, 1)
        self.monitor.scalars(step, {"loss": loss, "ppl": math.exp(min(loss, 50)), "tokens": int(count)}, prefix="valid")
        return loss


def schedule_for(config: LMTrainConfig):
    optim = config.optim
    if config.schedule == "cosine":
        return lambda s: cosine(s, optim.warmup_updates, optim.max_updates, optim.end_lr_ratio)
    if config.schedule == "rsqrt":
        return lambda s: rsqrt(s, optim.warmup_updates)
    if config.schedule == "polynomial":
        return lambda s: polynomial_decay(s, optim.warmup_updates, optim.max_updates, optim.end_lr_ratio, optim.power)
    raise TrainingError(f"schedule must be cosine, rsqrt or polynomial, got {config.schedule!r}")


def train(config: LMTrainConfig, command: str = "seqattn train-lm") -> Path:
    """Train (or resume) a language model; returns the best checkpoint (the last one without validation)."""
    if not config.data.train:
        raise TrainingError("data.train is empty: give text files, e.g. data.train='[data/train.txt]'")
    for path in config.data.train + config.data.valid:
        if not Path(path).is_file():
            raise TrainingError(f"text file {path} does not exist")
    schedule_for(config)
    return launch(_train, config, command)


def _prepare_tokenizer(config: LMTrainConfig, out: Path, ctx: DistributedContext):
    """Learn (rank 0) or reuse the tokenizer; every rank then reads the same tokenizer.json."""
    saved = out / TOKENIZER_FILE
    if ctx.is_main and not saved.is_file():
        try:
            tokenizer = load_tokenizer(config.data.tokenizer_from) if config.data.tokenizer_from else \
                train_tokenizer(config.data.tokenizer, config.data.train)
        except TokenizerError as error:
            raise TrainingError(str(error)) from None
        out.mkdir(parents=True, exist_ok=True)
        saved.write_text(tokenizer_to_json(tokenizer), encoding="utf-8")
    ctx.barrier()
    return load_tokenizer(out)


def _train(config: LMTrainConfig, ctx: DistributedContext, command: str) -> Path:
    data, optim = config.data, config.optim
    out = Path(config.run.output_dir)
    tokenizer = _prepare_tokenizer(config, out, ctx)
    try:
        if ctx.is_main:
            tokenize_files(tokenizer, data.train, out / "data" / "train.npy")
            if data.valid:
                tokenize_files(tokenizer, data.valid, out / "data" / "valid.npy")
        ctx.barrier()
        train_tokens = tokenize_files(tokenizer, data.train, out / "data" / "train.npy", progress=False)
        valid_tokens = tokenize_files(tokenizer, data.valid, out / "data" / "valid.npy", progress=False) \
            if data.valid else None
    except CorpusError as error:
        raise TrainingError(str(error)) from None
    if config.model.vocab_size == 0:
        config.model.vocab_size = tokenizer.vocab_size
    elif config.model.vocab_size < tokenizer.vocab_size:
        raise TrainingError(f"model.vocab_size {config.model.vocab_size} is smaller than the tokenizer's "
                            f"{tokenizer.vocab_size}")
    if config.model.positions == "learned" and data.seq_len > config.model.max_context:
        raise TrainingError(f"data.seq_len {data.seq_len} exceeds model.max_context {config.model.max_context}")
    torch.manual_seed(config.run.seed)
    model = TransformerLM(config.model)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = adamw([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_for(config))
    training = TrainingRun("train-lm", config, ctx, TrainingState(model, optimizer, scheduler), command=command,
                           extra_files={TOKENIZER_FILE: out / TOKENIZER_FILE})
    monitor = training.monitor
    if ctx.is_main:
        params = sum(p.numel() for p in model.parameters())
        monitor.message(f"{train_tokens.shape[0]:,} training tokens, "
                        f"{0 if valid_tokens is None else valid_tokens.shape[0]:,} validation tokens; "
                        f"vocabulary {tokenizer.vocab_size}; {params:,} parameters")
    task = LMTask(config, model, train_tokens, valid_tokens, ctx, monitor)
    training.train(task, validate_every=config.validate_every if valid_tokens is not None else 0)
    return training.result()
