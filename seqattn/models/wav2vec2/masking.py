"""Span masking and negative sampling for wav2vec 2.0 pretraining (fairseq's "static" masking).

Randomness comes from one ``torch.Generator`` per utterance, so an utterance gets the same masks and
negatives whichever rank or batch it lands in, and a resumed run draws exactly what the original did.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch


@dataclass
class TrainingDraws:
    """Every random draw of one training forward, made on the host from the per-utterance generators before
    the batch goes to the device, so the forward itself never reads a device value back (the masks depend on
    each utterance's frame count, which the host knows from its sample count).

    Each row draws in a fixed order: filterbank bands, time spans, channel spans, then (contrastive
    pretraining) Gumbel noise and negatives."""

    time: torch.Tensor  # (B, T) bool: masked frames
    channels: torch.Tensor | None = None  # (B, C) bool: zeroed channels
    bins: torch.Tensor | None = None  # (B, F) bool: zeroed filterbank bins
    time_index: torch.Tensor | None = None  # (B, M) long: each row's masked frames, when every row has M of them
    gumbel: torch.Tensor | None = None  # (B, M, G, V) uniform noise for the Gumbel-softmax of the M targets
    negatives: torch.Tensor | None = None  # (K, B, M) distractor indices among each row's targets

    def to_device(self, device: torch.device, non_blocking: bool = True) -> TrainingDraws:
        """The draws on ``device`` (pinned first when it is a GPU, so the copies do not wait for it)."""
        def move(tensor):
            if tensor is None or tensor.device == device:
                return tensor
            if device.type == "cuda" and torch.cuda.is_available() and not tensor.is_pinned():
                tensor = tensor.pin_memory()
            return tensor.to(device, non_blocking=non_blocking)

        return replace(self, **{field.name: move(getattr(self, field.name)) for field in fields(self)})


def draw_spans(length: int, mask_prob: float, span: int, generator: torch.Generator,
               min_masks: int = 0) -> torch.Tensor:
    """Masked positions of one sequence: ``int(mask_prob * length / span + U(0, 1))`` spans of ``span``
    frames, starts drawn without replacement from ``[0, length - span]``; overlapping spans merge."""
    count = int(mask_prob * length / span + torch.rand((), generator=generator).item()) if length > 0 else 0
    count = max(min_masks, count)
    span = min(span, length)
    starts_available = length - span + 1
    count = min(count, starts_available) if length > 0 else 0
    if count == 0:
        return torch.zeros(0, dtype=torch.long)
    starts = torch.randperm(starts_available, generator=generator)[:count]
    return (starts[:, None] + torch.arange(span)[None, :]).flatten().unique()


def span_mask(
    lengths: torch.Tensor, max_length: int, mask_prob: float, span: int, generators: list[torch.Generator],
    same_count: bool = True, sync_min: Callable[[int], int] | None = None,
) -> torch.Tensor:
    """(B, T) bool mask. With ``same_count`` every row keeps a random subset of the batch's smallest count
    (``sync_min`` extends "batch" across DDP ranks), so masked frames reshape to (B, M, C)."""
    rows = [draw_spans(int(lengths[b]), mask_prob, span, generators[b]) for b in range(lengths.shape[0])]
    if same_count and rows:
        smallest = min(len(r) for r in rows)
        if sync_min is not None:
            smallest = sync_min(smallest)
        rows = [r[torch.randperm(len(r), generator=g)[:smallest]] if len(r) > smallest else r
                for r, g in zip(rows, generators)]
    mask = torch.zeros(lengths.shape[0], max_length, dtype=torch.bool)
    for b, idx in enumerate(rows):
        mask[b, idx] = True
    return mask


def channel_mask(batch: int, channels: int, mask_prob: float, span: int,
                 generators: list[torch.Generator]) -> torch.Tensor:
    """(B, C) bool mask of channel spans (SpecAugment-style feature masking for fine-tuning)."""
    lengths = torch.full((batch,), channels, dtype=torch.long)
    return span_mask(lengths, channels, mask_prob, span, generators, same_count=False)


def frequency_mask(batch: int, bins: int, masks: int, max_width: int,
                   generators: list[torch.Generator]) -> torch.Tensor:
    """(B, bins) bool: SpecAugment's frequency masking. Each row gets ``masks`` bands of ``f ~ U{0..max_width}``
    bins starting at ``U{0..bins - f}`` (bands may overlap), drawn from the row's own generator."""
    mask = torch.zeros(batch, bins, dtype=torch.bool)
    for row, generator in enumerate(generators[:batch]):
        for _ in range(masks):
            width = int(torch.randint(0, min(max_width, bins) + 1, (), generator=generator))
            start = int(torch.randint(0, bins - width + 1, (), generator=generator))
            mask[row, start : start + width] = True
    return mask


def sample_negatives(num_targets: int, num_negatives: int, generators: list[torch.Generator]) -> torch.Tensor:
    """Indices (K, B, M) of negatives for each of M masked targets, drawn from the other M - 1 targets
    of the same utterance (never the target itself)."""
    if num_targets < 2:
        raise ValueError(f"need at least 2 masked frames per utterance to draw negatives, got {num_targets}")
    own = torch.arange(num_targets)[None, :]  # (1, M)
    rows = []
    for generator in generators:
        draws = torch.randint(0, num_targets - 1, (num_negatives, num_targets), generator=generator)  # (K, M)
        rows.append(draws + (draws >= own).long())  # skip the target's own index
    return torch.stack(rows, dim=1)  # (K, B, M)


def masked_positions(time_mask: torch.Tensor) -> torch.Tensor:
    """(B, M) positions of the masked frames of a host (B, T) mask whose rows all hold M of them."""
    batch = time_mask.shape[0]
    return time_mask.nonzero()[:, 1].view(batch, -1)  # (B, M): nonzero lists each row's frames in order


def gumbel_noise(rows: int, shape: tuple[int, ...], generators: list[torch.Generator]) -> torch.Tensor:
    """(B, rows, *shape) uniform noise, row b from ``generators[b]``."""
    return torch.stack([torch.rand((rows, *shape), generator=g) for g in generators]) if generators else \
        torch.zeros(0, rows, *shape)


def generators_for(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]
