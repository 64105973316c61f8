"""Manifests besides Kaldi dirs: fairseq ``.tsv`` (+ ``.ltr``/``.wrd``) and JSONL (NeMo style).

Both are read into the same :class:`seqattn.data.kaldi.Utterance` records; problems name file and line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .audio import AudioSource
from .kaldi import DataDirError, Problem, Utterance


def read_fairseq_manifest(path: str | os.PathLike, language: str | None = None) -> list[Utterance]:
    """``train.tsv``: first line is the audio root, then ``relative/path<TAB>num_samples``.

    Transcripts come from ``train.wrd`` (words) or, failing that, ``train.ltr`` (letters with ``|`` word
    boundaries), line-aligned with the tsv.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise DataDirError(path, [Problem(path.name, 0, "empty manifest (the first line must be the audio root)")])
    root = Path(lines[0].strip())
    problems, entries = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2 or not fields[1].strip().isdigit():
            problems.append(Problem(path.name, number, "expected 'path<TAB>num_samples'"))
            continue
        entries.append((number, fields[0]))
    texts = None
    for suffix in (".wrd", ".ltr"):
        labels = path.with_suffix(suffix)
        if labels.is_file():
            texts = labels.read_text(encoding="utf-8").splitlines()
            if suffix == ".ltr":
                texts = [" ".join("".join(t.split()).split("|")).strip() for t in texts]
            if len(texts) != len(lines) - 1:
                problems.append(Problem(labels.name, 0, f"{len(texts)} lines for {len(lines) - 1} audio entries"))
            break
    if problems:
        raise DataDirError(path, problems)
    return [
        Utterance(
            utt_id=Path(rel).stem if Path(rel).stem else f"utt{number}",
            source=AudioSource(str(root / rel)),
            speaker=Path(rel).parent.name or "unknown",
            text=texts[number - 2] if texts is not None else None,
            language=language,
        )
        for number, rel in entries
    ]


def _wrong_types(item: dict) -> str | None:
    """What is wrong with a manifest entry's field types or values, or None."""
    import math

    if not isinstance(item["audio_filepath"], str) or not item["audio_filepath"]:
        return f"'audio_filepath' must be a non-empty string, got {item['audio_filepath']!r}"
    for key in ("text", "lang", "language", "speaker"):
        if item.get(key) is not None and not isinstance(item[key], str):
            return f"{key!r} must be a string, got {item[key]!r}"
    for key in ("offset", "duration"):
        value = item.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            return f"{key!r} must be a non-negative number of seconds, got {value!r}"
    return None


def read_jsonl_manifest(path: str | os.PathLike, language: str | None = None) -> list[Utterance]:
    """One JSON object per line with ``audio_filepath`` and optionally ``text``, ``duration``, ``offset``,
    ``speaker``, ``lang``; relative paths are resolved against the manifest's directory."""
    path = Path(path)
    utterances, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(Problem(path.name, number, f"invalid JSON: {error.msg}"))
            continue
        if not isinstance(item, dict) or "audio_filepath" not in item:
            problems.append(Problem(path.name, number, "missing 'audio_filepath'"))
            continue
        wrong = _wrong_types(item)
        if wrong:
            problems.append(Problem(path.name, number, wrong))
            continue
        audio = Path(item["audio_filepath"])
        if not audio.is_absolute():
            audio = path.parent / audio
        offset = item.get("offset")
        end = None if offset is None or item.get("duration") is None else float(offset) + float(item["duration"])
        utterances.append(Utterance(
            utt_id=str(item.get("utt_id") or item.get("id") or f"{audio.stem}-{number}"),
            source=AudioSource(str(audio), None if offset is None else float(offset), end),
            speaker=str(item.get("speaker", "unknown")),
            text=item.get("text"),
            language=item.get("lang", item.get("language", language)),
        ))
    if problems:
        raise DataDirError(path, problems)
    return utterances
