"""Span masking and negative sampling for wav2vec 2.0 pretraining (fairseq's "static" masking).

Both take an explicit ``torch.Generator`` so that a resumed run draws exactly the same masks.
"""
from __future__ import annotations

import torch


def span_mask(
    lengths: torch.Tensor, max_length: int, mask_prob: float, span: int, generator: torch.Generator,
    same_count: bool = True, min_masks: int = 0,
) -> torch.Tensor:
    """(B, T) bool mask of spans of ``span`` frames covering about ``mask_prob`` of each sequence.

    Per sequence of valid length ``n``: ``int(mask_prob * n / span + U(0, 1))`` span starts are drawn
    without replacement from ``[0, n - span]``; overlapping spans merge. With ``same_count`` every row is
    then subsampled to the smallest count in the batch, so masked frames reshape to (B, M, C).
    """
    batch = lengths.shape[0]
    rows = []
    for b in range(batch):
        n = int(lengths[b])
        count = int(mask_prob * n / span + torch.rand((), generator=generator).item())
        count = max(min_masks, count)
        span_here = min(span, n)
        starts_available = n - span_here + 1
        count = min(count, starts_available) if n > 0 else 0
        if count == 0:
            rows.append(torch.zeros(0, dtype=torch.long))
            continue
        starts = torch.randperm(starts_available, generator=generator)[:count]
        idx = (starts[:, None] + torch.arange(span_here)[None, :]).flatten().unique()
        rows.append(idx)
    if same_count and rows:
        smallest = min(len(r) for r in rows)
        rows = [r[torch.randperm(len(r), generator=generator)[:smallest]] if len(r) > smallest else r for r in rows]
    mask = torch.zeros(batch, max_length, dtype=torch.bool)
    for b, idx in enumerate(rows):
        mask[b, idx] = True
    return mask


def channel_mask(batch: int, channels: int, mask_prob: float, span: int, generator: torch.Generator) -> torch.Tensor:
    """(B, C) bool mask of channel spans (SpecAugment-style feature masking for fine-tuning)."""
    lengths = torch.full((batch,), channels, dtype=torch.long)
    return span_mask(lengths, channels, mask_prob, span, generator, same_count=False)


def sample_negatives(num_targets: int, batch: int, num_negatives: int, generator: torch.Generator) -> torch.Tensor:
    """Indices (K, B, M) of negatives for each of M masked targets, drawn from the other M - 1 targets
    of the same utterance (never the target itself)."""
    if num_targets < 2:
        raise ValueError(f"need at least 2 masked frames per utterance to draw negatives, got {num_targets}")
    own = torch.arange(num_targets)[None, None, :]  # (1, 1, M)
    draws = torch.randint(0, num_targets - 1, (num_negatives, batch, num_targets), generator=generator)
    return draws + (draws >= own).long()  # skip the target's own index
