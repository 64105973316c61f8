"""Labelled audio for CTC fine-tuning and evaluation: checks, duration-batched padded batches.

Before training, every utterance is checked: readable audio, transcript characters covered by the
vocabulary, and a label sequence that fits the model's frames (CTC needs ``frames >= labels + repeats``).
Utterances that fail are reported by id with the reason instead of being trained on silently.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .audio import AudioError, audio_duration, load_audio, normalize_waveform
from .augment import AugmentConfig
from .augment import augment as augment_wave
from .sampling import duration_batches
from .text import CharVocabulary, VocabularyError
from .unlabelled import item_seed, read_utterances


@dataclass
class LabelledItem:
    utt_id: str
    source: object  # AudioSource
    language: str | None
    num_samples: int
    text: str  # normalised reference
    labels: list[int]


@dataclass
class LabelledReport:
    items: list[LabelledItem]
    rejected: list[str] = field(default_factory=list)  # "utt_id: reason"
    fixed: list[str] = field(default_factory=list)  # data-dir problems dropped under fix
    too_few_frames: int = 0  # of the rejected, utterances whose labels need more frames than the audio gives


def read_texts(sources: list[tuple[str, str | None]], fix: bool = False) -> list[tuple[str, str | None]]:
    """(transcript, language) of every utterance that has a transcript."""
    texts = []
    for path, language in sources:
        utterances, _ = read_utterances(path, language, fix)
        texts.extend((u.text, u.language) for u in utterances if u.text)
    return texts


def prepare(sources: list[tuple[str, str | None]], vocab: CharVocabulary, sample_rate: int, min_samples: int,
            max_samples: int, frames_of: Callable[[int], int], fix: bool = False) -> LabelledReport:
    """Read, check and label every utterance of ``sources``."""
    report = LabelledReport([])
    for path, language in sources:
        utterances, problems = read_utterances(path, language, fix)
        report.fixed.extend(problems)
        for utt in utterances:
            if not utt.text:
                report.rejected.append(f"{utt.utt_id}: no transcript")
                continue
            try:
                missing = vocab.missing(utt.text, utt.language)
            except VocabularyError as error:  # e.g. a common-label vocabulary and no language for this utterance
                report.rejected.append(f"{utt.utt_id}: {error}")
                continue
            if missing:
                shown = " ".join(f"{c!r}(U+{ord(c):04X})" for c in sorted(missing))
                report.rejected.append(f"{utt.utt_id}: characters not in the vocabulary: {shown}")
                continue
            try:
                samples = int(audio_duration(utt.source) * sample_rate)
            except AudioError as error:
                report.rejected.append(f"{utt.utt_id}: {error}")
                continue
            if samples < min_samples or samples > max_samples:
                report.rejected.append(f"{utt.utt_id}: {samples / sample_rate:.2f} s is outside "
                                       f"[{min_samples / sample_rate:.2f}, {max_samples / sample_rate:.2f}] s")
                continue
            labels = vocab.encode(utt.text, language=utt.language)
            needed = len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))
            frames = frames_of(samples)
            if needed > frames:
                report.rejected.append(f"{utt.utt_id}: {len(labels)} labels need {needed} frames, audio has {frames}")
                report.too_few_frames += 1
                continue
            report.items.append(LabelledItem(utt.utt_id, utt.source, utt.language, samples, vocab.normalize(utt.text),
                                             labels))
    return report


class PaddedBatches(torch.utils.data.Dataset):
    """Item b is this rank's share of padded batch b of an epoch (batches by total padded duration)."""

    def __init__(self, items: list[LabelledItem], epoch: int, seed: int, max_tokens: int, sample_rate: int,
                 normalize: bool, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 augment: AugmentConfig | None = None, shortest_first: bool = False):
        self.items, self.epoch, self.seed = items, epoch, seed
        self.augment = augment if augment is not None and augment.enabled else None
        self.sample_rate, self.normalize = sample_rate, normalize
        self.rank, self.world_size = rank, world_size
        generator = torch.Generator().manual_seed(item_seed(seed, epoch, 0, purpose=2))
        order = torch.randperm(len(items), generator=generator).tolist() if shuffle else list(range(len(items)))
        sizes = [item.num_samples for item in items]
        self.batches = duration_batches(order, sizes, max_tokens, generator)
        if not shuffle:
            self.batches.sort(key=lambda b: b[0])
        elif shortest_first:  # SortaGrad (Deep Speech 2): the epoch goes from the shortest batches to the longest
            self.batches.sort(key=lambda b: max(sizes[i] for i in b))

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, batch_index: int) -> dict:
        batch = self.batches[batch_index]
        waves, keys, failed, chosen = [], [], [], []
        for slot in range(self.rank, len(batch), self.world_size):
            item = self.items[batch[slot]]
            try:
                wave = load_audio(item.source, self.sample_rate)
            except AudioError as error:
                failed.append(f"{item.utt_id}: {error}")
                continue
            key = item_seed(self.seed, self.epoch, batch_index * 100_003 + slot)
            if self.augment is not None:  # drawn from the utterance's own key: the same audio on resume
                wave = augment_wave(wave, self.augment, self.sample_rate, torch.Generator().manual_seed(key ^ 0x5EED))
            waves.append(normalize_waveform(wave) if self.normalize else wave)
            keys.append(key)
            chosen.append(item)
        lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
        padded = torch.zeros(len(waves), int(lengths.max()) if waves else 0)
        for i, wave in enumerate(waves):
            padded[i, : wave.numel()] = wave
        return {
            "waves": padded, "lengths": lengths, "keys": keys, "failed": failed, "batch_index": batch_index,
            "labels": torch.tensor([t for item in chosen for t in item.labels], dtype=torch.long),
            "label_lengths": torch.tensor([len(item.labels) for item in chosen], dtype=torch.long),
            "texts": [item.text for item in chosen], "utt_ids": [item.utt_id for item in chosen],
            "languages": [item.language for item in chosen],
        }
