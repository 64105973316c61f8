"""wav2vec 2.0 self-supervised pretraining on unlabelled multilingual audio.

Run:  seqattn pretrain recipes/wav2vec2/pretrain_tiny.yaml data.train='[{path: data/hi}]' run.output_dir=exp/pt
      torchrun --nproc_per_node 2 -m seqattn.cli.main pretrain CONFIG.yaml [key=value ...]

Reads top to bottom: configuration, data scan, model and optimiser, resume, then the shared update loop
(:mod:`seqattn.train.loop`) with the pretraining :class:`PretrainTask`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from seqattn.data.sources import DataSource
from seqattn.data.unlabelled import CroppedBatches, plan_epoch, scan
from seqattn.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForPretraining
from seqattn.models.wav2vec2.masking import generators_for

from .distributed import DistributedContext
from .loop import (
    OptimConfig,
    RunConfig,
    StepOutput,
    Task,
    TrainingError,
    TrainingRun,
    TrainingState,
    adamw,
    check_sources,
    launch,
)
from .schedule import polynomial_decay

__all__ = ["PretrainConfig", "PretrainData", "TrainingError", "train"]


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
class PretrainConfig:
    model: Wav2Vec2Config = field(default_factory=Wav2Vec2Config)
    data: PretrainData = field(default_factory=PretrainData)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="exp/pretrain"))


class PretrainingStep(nn.Module):
    """Puts the loss inside ``forward`` so DDP sees (and synchronises) it."""

    def __init__(self, model: Wav2Vec2ForPretraining, context: DistributedContext):
        super().__init__()
        self.model, self.context = model, context

    def forward(self, waves, draws):
        ctx = self.context
        return self.model.pretraining_loss(waves, None, world_size=ctx.world_size, reduce=ctx.sum_differentiable,
                                           draws=draws)


class PretrainTask(Task):
    def __init__(self, config: PretrainConfig, model, items, ctx: DistributedContext):
        self.config, self.model, self.items, self.ctx = config, model, items, ctx
        self.min_samples = model.wav2vec2.feature_extractor.receptive_field()[0]  # one frame's worth of audio
        step = PretrainingStep(model, ctx)
        if ctx.enabled:
            # broadcast_buffers=False: k-means centroids stay identical through their own all-reduce, not by
            # copying rank 0's buffers over the others (which would hide a divergence)
            step = DistributedDataParallel(
                step,
                device_ids=ctx.device_ids,
                find_unused_parameters=config.model.layerdrop > 0,
                broadcast_buffers=False,
            )
        self.step_module = step

    def epoch_dataset(self, epoch: int):
        data, run = self.config.data, self.config.run
        plan = plan_epoch(self.items, epoch, run.seed, data.alpha, data.max_tokens, data.max_sample_size)
        return CroppedBatches(
            self.items,
            plan,
            run.seed,
            data.max_sample_size,
            data.sample_rate,
            self.config.model.normalize_waveform,
            self.ctx.rank,
            self.ctx.world_size,
        )

    def is_empty(self, batch) -> bool:
        waves = batch["waves"]
        return waves.shape[0] == 0 or waves.shape[1] < self.min_samples

    def no_sync(self):
        return self.step_module.no_sync()

    def before_update(self, step: int) -> None:
        self.model.set_num_updates(step)

    def host_prepare(self, batch):
        """The masks, Gumbel noise and negatives, drawn on the host from each utterance's generator (the masked
        count is equalised over ranks there, through the host group)."""
        waves = batch["waves"]
        draws = self.model.draw_training(None, waves.shape[1], generators_for(batch["keys"]), self.ctx.min_int)
        return {**batch, "draws": draws}

    def forward(self, batch) -> StepOutput:
        waves = batch["waves"]
        result = self.step_module(waves, batch["draws"])
        loss = result.loss.detach()
        statistics = {
            "loss": loss,
            "targets": result.num_targets,
            "correct": result.correct,
            "audio_s": waves.numel() / self.config.data.sample_rate,
            "code_ppl": result.code_perplexity,
            "prob_ppl": result.prob_perplexity,
            "temperature": float(result.temperature),
        }
        postfix = {"loss": loss, "acc": result.correct / result.num_targets.clamp(min=1)}
        return StepOutput(result.loss, statistics, postfix)

    def log_values(self, statistics: dict, micro_batches: float, elapsed: float) -> dict:
        micro = max(micro_batches, 1)  # summed over ranks: the per-micro-batch means below divide by it
        return {
            "loss": statistics["loss"] / micro,
            "accuracy": statistics["correct"] / max(statistics["targets"], 1),
            "code_perplexity": statistics["code_ppl"] / micro,
            "prob_perplexity": statistics["prob_ppl"] / micro,
            "temperature": statistics["temperature"] / micro,
            "audio_s_per_s": statistics["audio_s"] / elapsed,
        }


def train(config: PretrainConfig, command: str = "seqattn pretrain") -> Path:
    """Run (or resume) pretraining; returns the directory of the final checkpoint."""
    config.model.validate()
    check_sources([s.path for s in config.data.train], "unlabelled")
    return launch(_train, config, command)


def _train(config: PretrainConfig, ctx: DistributedContext, command: str) -> Path:
    data, optim = config.data, config.optim
    torch.manual_seed(config.run.seed)
    model = Wav2Vec2ForPretraining(config.model)
    optimizer = adamw(model.parameters(), optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: polynomial_decay(s, optim.warmup_updates, optim.max_updates, optim.end_lr_ratio, optim.power),
    )
    training = TrainingRun("pretrain", config, ctx, TrainingState(model, optimizer, scheduler), command=command)
    out, monitor = training.out, training.monitor
    report = scan(
        [(s.location, s.language) for s in data.train],
        data.sample_rate,
        data.min_sample_size,
        fix=data.fix_data_dirs,
        progress=ctx.is_main,
    )
    if ctx.is_main:
        if report.failed:
            (out / "failed_audio.txt").write_text("\n".join(report.failed) + "\n")
        monitor.message(
            f"{len(report.items)} utterances; {len(report.failed)} unreadable (see failed_audio.txt); "
            f"{report.too_short} shorter than {data.min_sample_size} samples dropped; "
            f"{len(report.fixed)} data-dir problems fixed"
        )
    if not report.items:
        raise TrainingError("no usable audio: every utterance was unreadable or too short")

    def describe_epoch(epoch, dataset):
        monitor.message(
            f"epoch {epoch}: {len(dataset)} batches, utterances per language "
            f"{dict(sorted(dataset.plan.language_counts.items()))}"
        )

    task = PretrainTask(config, model, report.items, ctx)
    training.train(task, num_workers=data.num_workers, describe_epoch=describe_epoch)
    return training.manager.latest()
