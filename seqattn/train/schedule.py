"""Learning-rate schedules as multipliers of the peak rate (for ``torch.optim.lr_scheduler.LambdaLR``)."""
from __future__ import annotations

import math


def polynomial_decay(step: int, warmup: int, total: int, end_ratio: float = 0.0, power: float = 1.0) -> float:
    """Linear warm-up to 1, then ``(1 - progress) ** power`` decay to ``end_ratio`` (fairseq's polynomial_decay)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if step >= total:
        return end_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return end_ratio + (1 - end_ratio) * (1 - progress) ** power


def tri_stage(step: int, total: int, warmup_ratio: float = 0.1, hold_ratio: float = 0.4,
              init_scale: float = 0.01, final_scale: float = 0.05) -> float:
    """fairseq's tri-stage schedule: linear warm-up from ``init_scale``, hold at 1, exponential decay to
    ``final_scale`` over the remaining updates."""
    warmup = int(total * warmup_ratio)
    hold = int(total * hold_ratio)
    decay = max(1, total - warmup - hold)
    if step < warmup:
        return init_scale + (1 - init_scale) * step / max(1, warmup)
    if step < warmup + hold:
        return 1.0
    progress = min(1.0, (step - warmup - hold) / decay)
    return math.exp(math.log(final_scale) * progress)


def cosine(step: int, warmup: int, total: int, end_ratio: float = 0.1) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return end_ratio + (1 - end_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def rsqrt(step: int, warmup: int) -> float:
    """Linear warm-up, then inverse square-root decay (``sqrt(warmup / step)``)."""
    warmup = max(1, warmup)
    if step < warmup:
        return (step + 1) / warmup
    return (warmup / (step + 1)) ** 0.5
