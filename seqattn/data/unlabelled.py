"""Unlabelled audio for self-supervised pretraining: scanning, epoch plans and cropped batches.

The plan of an epoch (which utterances, in which batches) depends only on (seed, epoch), so every DDP rank
computes the same plan, takes its share of each global batch, and a resumed run continues at the exact
batch where it stopped. Crops are drawn from per-utterance generators for the same reason.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .audio import AudioError, audio_duration, load_audio, normalize_waveform
from .hf_datasets import is_dataset_spec, read_dataset
from .kaldi import read_data_dir
from .manifest import read_fairseq_manifest, read_jsonl_manifest
from .sampling import duration_batches, temperature_epoch


@dataclass
class AudioItem:
    utt_id: str
    source: object  # AudioSource
    language: str
    num_samples: int  # at the target sample rate (from the header)


@dataclass
class ScanReport:
    items: list[AudioItem]
    failed: list[str]  # "utt_id: reason" for sources that cannot be read
    too_short: int  # dropped for being shorter than min_sample_size
    fixed: list[str]  # data-dir problems dropped under fix


def read_utterances(path: str | os.PathLike, language: str | None, fix: bool):
    """(utterances, data-dir problems dropped under ``fix``) from a Kaldi data dir, an HF dataset spec
    (:mod:`seqattn.data.hf_datasets`), a fairseq ``.tsv`` or a ``.jsonl`` manifest."""
    if is_dataset_spec(path):
        return read_dataset(str(path), language), []
    path = Path(path)
    if path.is_dir():
        data = read_data_dir(path, fix=fix, language=language)
        return data.utterances, [str(p) for p in data.problems]
    if path.suffix == ".tsv":
        return read_fairseq_manifest(path, language), []
    if path.suffix in (".jsonl", ".json"):
        return read_jsonl_manifest(path, language), []
    raise FileNotFoundError(f"{path}: not a Kaldi data directory, an HF dataset, or a .tsv or .jsonl manifest")


def scan(sources: list[tuple[str, str | None]], sample_rate: int, min_samples: int, fix: bool = False,
         progress: bool = True) -> ScanReport:
    """Read every source's utterance list and audio header; unreadable ones are listed, not fatal."""
    items, failed, fixed, too_short = [], [], [], 0
    for path, language in sources:
        utterances, problems = read_utterances(path, language, fix)
        fixed.extend(problems)
        for utt in tqdm(utterances, desc=f"scan {Path(path).name}", disable=not progress, leave=False):
            try:
                seconds = audio_duration(utt.source)
            except AudioError as error:
                failed.append(f"{utt.utt_id}: {error}")
                continue
            samples = int(seconds * sample_rate)
            if samples < min_samples:
                too_short += 1
                continue
            items.append(AudioItem(utt.utt_id, utt.source, utt.language or Path(path).name, samples))
    return ScanReport(items, failed, too_short, fixed)


def item_seed(seed: int, epoch: int, index: int, purpose: int = 0) -> int:
    """A stable 63-bit seed for (run seed, epoch, utterance index in the plan, purpose)."""
    value = (seed * 1_000_003 + epoch) * 1_000_000_007 + index * 4 + purpose
    return value % (2**63 - 1)


@dataclass
class EpochPlan:
    epoch: int
    batches: list[list[int]]  # item indices of each global batch
    language_counts: dict[str, int]


def plan_epoch(items: list[AudioItem], epoch: int, seed: int, alpha: float, max_tokens: int,
               max_sample_size: int) -> EpochPlan:
    generator = torch.Generator().manual_seed(item_seed(seed, epoch, 0, purpose=3))
    languages = [item.language for item in items]
    durations = [item.num_samples for item in items]
    order = temperature_epoch(languages, durations, alpha, generator)
    batches = duration_batches(order, durations, max_tokens, generator, max_size=max_sample_size)
    counts: dict[str, int] = {}
    for index in order:
        counts[languages[index]] = counts.get(languages[index], 0) + 1
    return EpochPlan(epoch, batches, counts)


class CroppedBatches(torch.utils.data.Dataset):
    """Dataset over the global batches of one epoch plan; item b is this rank's share of batch b.

    All utterances of a global batch are cropped to the same length, ``min(max_sample_size, shortest)``
    (fairseq's pretraining batches without padding), at offsets drawn from per-utterance generators.
    Unreadable audio is skipped and reported in the returned ``failed`` list.
    """

    def __init__(self, items, plan: EpochPlan, seed: int, max_sample_size: int, sample_rate: int,
                 normalize: bool, rank: int = 0, world_size: int = 1):
        self.items, self.plan, self.seed = items, plan, seed
        self.max_sample_size, self.sample_rate, self.normalize = max_sample_size, sample_rate, normalize
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.plan.batches)

    def positions(self, batch_index: int) -> list[int]:
        """Slots of the global batch that this rank handles."""
        return list(range(self.rank, len(self.plan.batches[batch_index]), self.world_size))

    def __getitem__(self, batch_index: int) -> dict:
        batch = self.plan.batches[batch_index]
        # 16 samples of slack: resampling can make the decoded length differ from the header's by one sample
        crop = min(self.max_sample_size, min(self.items[i].num_samples for i in batch) - 16)
        waves, keys, failed = [], [], []
        for slot in self.positions(batch_index):
            item = self.items[batch[slot]]
            key = item_seed(self.seed, self.plan.epoch, batch_index * 100_003 + slot)
            try:
                wave = load_audio(item.source, self.sample_rate)
            except AudioError as error:
                failed.append(f"{item.utt_id}: {error}")
                continue
            if wave.numel() < crop:
                failed.append(f"{item.utt_id}: decoded {wave.numel()} samples, expected at least {crop}")
                continue
            generator = torch.Generator().manual_seed(key)
            start = int(torch.randint(0, wave.numel() - crop + 1, (1,), generator=generator))
            wave = wave[start : start + crop]
            waves.append(normalize_waveform(wave) if self.normalize else wave)
            keys.append(key)
        stacked = torch.stack(waves) if waves else torch.zeros(0, max(crop, 0))
        return {"waves": stacked, "keys": keys, "failed": failed, "batch_index": batch_index}
