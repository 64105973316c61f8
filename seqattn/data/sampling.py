"""Language sampling by temperature and duration-based batching.

IndicWav2Vec / XLS-R sample language l with probability ``p_l ∝ (n_l / N) ** alpha`` (alpha = 0.7 by
default): alpha = 1 keeps the natural proportions, alpha -> 0 makes languages uniform, so low-resource
languages are up-sampled. Batches hold as many utterances as fit under a total sample budget.
"""
from __future__ import annotations

import torch


def language_probabilities(hours: dict[str, float], alpha: float) -> dict[str, float]:
    """``p_l ∝ (hours_l / total) ** alpha``."""
    if not hours:
        raise ValueError("no languages to sample from")
    if not 0 < alpha <= 1:
        raise ValueError(f"temperature alpha must be in (0, 1], got {alpha}")
    total = sum(hours.values())
    weights = {lang: (h / total) ** alpha for lang, h in hours.items() if h > 0}
    norm = sum(weights.values())
    return {lang: w / norm for lang, w in weights.items()}


def temperature_epoch(languages: list[str], durations: list[float], alpha: float,
                      generator: torch.Generator) -> list[int]:
    """Indices of one epoch: each language resampled (with replacement when up-sampled) to ``p_l`` of the
    epoch's total duration. With one language this is a plain permutation."""
    by_language: dict[str, list[int]] = {}
    for index, lang in enumerate(languages):
        by_language.setdefault(lang, []).append(index)
    if len(by_language) == 1:
        return torch.randperm(len(languages), generator=generator).tolist()
    hours = {lang: sum(durations[i] for i in idx) / 3600 for lang, idx in by_language.items()}
    probs = language_probabilities(hours, alpha)
    total_hours = sum(hours.values())
    chosen: list[int] = []
    for lang in sorted(by_language):
        idx = by_language[lang]
        mean_hours = hours[lang] / len(idx)
        count = max(1, round(probs[lang] * total_hours / mean_hours)) if mean_hours > 0 else 0
        picks = torch.randint(len(idx), (count,), generator=generator) if count > len(idx) else \
            torch.randperm(len(idx), generator=generator)[:count]
        chosen.extend(idx[i] for i in picks.tolist())
    order = torch.randperm(len(chosen), generator=generator).tolist()
    return [chosen[i] for i in order]


def duration_batches(indices: list[int], sizes: list[int], max_tokens: int, generator: torch.Generator,
                     max_size: int | None = None) -> list[list[int]]:
    """Group indices into batches whose padded size (count x longest, capped at ``max_size``) stays under
    ``max_tokens``; similar lengths go together, and the batch order is shuffled."""
    capped = [min(sizes[i], max_size) if max_size else sizes[i] for i in indices]
    order = sorted(range(len(indices)), key=lambda k: capped[k])
    batches, current, longest = [], [], 0
    for k in order:
        size = capped[k]
        if current and max(longest, size) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(indices[k])
        longest = max(longest, size)
    if current:
        batches.append(current)
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]

