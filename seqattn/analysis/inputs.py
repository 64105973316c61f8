"""Utterances to analyse: read from Kaldi data dirs, manifests or files, sampled, loaded as model input.

Analysis commands take the same inputs as ``seqattn transcribe``. An input that cannot be read is
reported and skipped; the analysis goes on with the others.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seqattn.data.audio import AudioError, load_audio, normalize_waveform
from seqattn.data.hf_datasets import is_dataset_spec
from seqattn.decode.transcribe import Failure, InputItem, collect_inputs
from seqattn.errors import SeqattnError


class AnalysisInputError(SeqattnError, ValueError):
    """The inputs cannot answer the question asked (no audio, no languages, too few utterances)."""


@dataclass
class Utterance:
    utt_id: str
    wave: torch.Tensor  # (S,) float32 at the model's rate, normalised if the model expects it
    language: str | None


@dataclass
class AnalysisInputs:
    utterances: list[Utterance] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(u.wave.numel() for u in self.utterances) / 16000


def parse_data_arguments(arguments: list[str]) -> list[tuple[str | None, str]]:
    """``[LANG=]PATH`` arguments -> (language or None, path); ``LANG=`` gives every utterance of PATH that
    language (for data dirs without ``utt2lang``, or plain audio directories)."""
    parsed = []
    for argument in arguments:
        language, sep, path = argument.partition("=")
        if sep and language and "/" not in language and not Path(argument).exists():
            parsed.append((language, path))
        else:
            parsed.append((None, argument))
    return parsed


def gather_items(arguments: list[str]) -> tuple[list[InputItem], list[Failure]]:
    """Every utterance named by ``[LANG=]PATH`` arguments: a Kaldi data dir (has ``wav.scp``), a ``.jsonl``
    manifest, a fairseq ``.tsv`` manifest, an HF dataset spec, an audio file or a directory of audio files."""
    items, failures = [], []
    for language, path in parse_data_arguments(arguments):
        p = Path(path)
        if (p / "wav.scp").is_file():
            found, failed = collect_inputs([], data_dir=str(p))
        elif (p.suffix in (".jsonl", ".tsv") and p.is_file()) or is_dataset_spec(path):
            found, failed = collect_inputs([], manifest=str(p))
        else:
            found, failed = collect_inputs([str(p)])
        for item in found:
            item.language = language or item.language
        items.extend(found)
        failures.extend(failed)
    return items, failures


def load_inputs(arguments: list[str], *, max_utterances: int | None = None, max_seconds: float | None = None,
                per_language: int | None = None, normalize: bool = False, seed: int = 0,
                min_samples: int = 1) -> AnalysisInputs:
    """Read, sample and decode the utterances.

    ``per_language`` keeps at most that many utterances of each language, ``max_utterances`` at most that
    many overall (a seeded random sample, so repeated runs analyse the same audio); ``max_seconds`` crops
    each utterance so that full-attention weights (N x N) stay small. Utterances shorter than
    ``min_samples`` (the model's CNN receptive field: they give no frame) are reported as failures.
    """
    items, failures = gather_items(arguments)
    if not items and not failures:
        raise AnalysisInputError(f"no utterances found in {' '.join(arguments)}")
    rng = random.Random(seed)
    rng.shuffle(items)
    if per_language is not None:
        kept, seen = [], {}
        for item in items:
            seen[item.language] = seen.get(item.language, 0) + 1
            if seen[item.language] <= per_language:
                kept.append(item)
        items = kept
    if max_utterances is not None:
        items = items[:max_utterances]
    items.sort(key=lambda item: item.utt_id)
    result = AnalysisInputs(failures=list(failures))
    for item in items:
        try:
            wave = load_audio(item.source)
        except AudioError as error:
            result.failures.append(Failure(item.utt_id, str(error)))
            continue
        if wave.numel() < min_samples:
            result.failures.append(Failure(item.utt_id, f"{item.source}: too short ({wave.numel()} samples, "
                                                        f"one frame needs {min_samples})"))
            continue
        if max_seconds is not None:
            wave = wave[: int(max_seconds * 16000)]
        if normalize:
            wave = normalize_waveform(wave)
        result.utterances.append(Utterance(item.utt_id, wave, item.language))
    if not result.utterances:
        reasons = "; ".join(f"{f.name}: {f.reason}" for f in result.failures[:5])
        raise AnalysisInputError(f"none of the inputs could be read ({reasons})")
    return result
