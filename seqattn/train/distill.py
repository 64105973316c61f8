"""Distil a localized model's attention layers against the original (teacher) model on unlabelled audio.

Only the attention projections (q, k, v, out) of the student's converted layers learn; everything else is
frozen, so the student stays the teacher's model with a different attention pattern. The loss is the
mean over layers of the squared error between the student's and the teacher's per-layer outputs, on
real frames of random crops. A fixed set of held-out crops measures the loss before and after.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from seqattn.utils.device import module_device

from .schedule import cosine


@dataclass
class DistillConfig:
    steps: int = 200
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 20
    batch_size: int = 4
    crop_seconds: float = 8.0
    held_out_crops: int = 8
    max_grad_norm: float = 1.0
    seed: int = 0


@dataclass
class DistillResult:
    losses: list[float] = field(default_factory=list)  # training loss per step
    held_out_before: float = float("nan")
    held_out_after: float = float("nan")
    trained_parameters: int = 0


def random_crops(waves: list[torch.Tensor], count: int, samples: int, generator: torch.Generator):
    """``count`` crops of at most ``samples`` samples from random utterances -> (padded (B, S), lengths (B,))."""
    crops = []
    for _ in range(count):
        wave = waves[int(torch.randint(len(waves), (1,), generator=generator))]
        start = int(torch.randint(max(1, wave.numel() - samples + 1), (1,), generator=generator))
        crops.append(wave[start : start + samples])
    lengths = torch.tensor([c.numel() for c in crops])
    return torch.nn.utils.rnn.pad_sequence(crops, batch_first=True), lengths  # (B, S_max)


def layer_loss(student, teacher, waveforms, lengths) -> torch.Tensor:
    """Mean over layers of the per-frame squared error of the layer outputs (real frames only), on the
    teacher's device."""
    device = module_device(teacher)
    waveforms, lengths = waveforms.to(device), lengths.to(device)
    with torch.no_grad():
        features = teacher.features(waveforms, lengths)
        targets = teacher.encode(features).layer_outputs
    # The student's CNN and projections are frozen copies of the teacher's, so the features are shared.
    outputs = student.encode(features).layer_outputs
    valid = torch.ones(features.x.shape[:2], device=device) if features.padding_mask is None \
        else (~features.padding_mask).float()
    total = 0.0
    for out, target in zip(outputs, targets):
        total = total + (((out - target) ** 2).mean(-1) * valid).sum() / valid.sum()
    return total / len(outputs)


def attention_parameters(backbone, layers: list[int]) -> list[torch.nn.Parameter]:
    params = []
    for index in layers:
        params.extend(backbone.encoder.layers[index].attention.parameters())
    return params


def distill_attention(student_backbone, teacher_backbone, waves: list[torch.Tensor], layers: list[int],
                      config: DistillConfig, progress: bool = True, log=None) -> DistillResult:
    """Train the attention projections of ``layers`` of ``student_backbone`` (a :class:`Wav2Vec2Model`) to
    reproduce ``teacher_backbone``'s layer outputs. Both stay in eval mode (no dropout, no layerdrop)."""
    if not layers:
        raise ValueError("no layers to distil: every layer was local already")
    generator = torch.Generator().manual_seed(config.seed)
    samples = int(config.crop_seconds * 16000)
    held_out = random_crops(waves, config.held_out_crops, samples, torch.Generator().manual_seed(config.seed + 1))
    for param in student_backbone.parameters():
        param.requires_grad_(False)
    trainable = attention_parameters(student_backbone, layers)
    for param in trainable:
        param.requires_grad_(True)
    student_backbone.eval()
    teacher_backbone.eval()
    result = DistillResult(trained_parameters=sum(p.numel() for p in trainable))
    with torch.no_grad():
        result.held_out_before = float(layer_loss(student_backbone, teacher_backbone, *held_out))
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine(step, config.warmup, config.steps))
    bar = tqdm(range(config.steps), desc="distil", unit="step", disable=not progress)
    for step in bar:
        loss = layer_loss(student_backbone, teacher_backbone, *random_crops(waves, config.batch_size, samples,
                                                                            generator))
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"distillation loss is {value} at step {step}; lower --distill-lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        schedule.step()
        result.losses.append(value)
        bar.set_postfix(loss=f"{value:.4g}")
        if log is not None:
            log(step, value)
    for param in student_backbone.parameters():
        param.requires_grad_(True)
    with torch.no_grad():
        result.held_out_after = float(layer_loss(student_backbone, teacher_backbone, *held_out))
    return result
