"""Kaldi data directories: reading, validation in the spirit of ``utils/validate_data_dir.sh``, and ``--fix``.

Files (two columns, sorted by key, UTF-8, LF line ends): ``wav.scp`` (recording -> path, or a command
ending in ``|`` whose stdout is the audio), optional ``segments`` (``utt rec start end``), ``text``,
``utt2spk``, ``spk2utt`` and optionally ``utt2lang``. Every problem is reported as ``file:line: message``.
With ``fix=True`` offending entries are dropped (and counted), like ``utils/fix_data_dir.sh``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from seqattn.errors import SeqattnError

from .audio import AudioSource


class DataDirError(SeqattnError, ValueError):
    """A data directory that fails validation; the message lists ``file:line: problem`` entries."""

    def __init__(self, path, problems):
        self.problems = problems
        shown = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"data dir {path} has {len(problems)} problem(s):\n  {shown}{more}\n"
                         "(use --fix to drop the offending entries)")


@dataclass
class Problem:
    file: str
    line: int  # 1-based; 0 when the problem concerns the whole file
    message: str
    key: str | None = None  # the id to drop when fixing

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


@dataclass
class Utterance:
    utt_id: str
    source: AudioSource
    speaker: str
    text: str | None = None
    language: str | None = None


@dataclass
class DataDir:
    path: Path
    utterances: list[Utterance]
    problems: list[Problem] = field(default_factory=list)  # problems found (fixed ones included)
    dropped: int = 0  # utterances dropped by fix


FIELD_SEPARATOR = re.compile(r"[ \t]+")


def read_table(path: Path, problems: list[Problem], min_fields: int = 2) -> dict[str, tuple[str, int]]:
    """Read ``key value...`` lines -> {key: (rest of line, line number)}, recording problems as found."""
    name = f"{path.parent.name}/{path.name}"
    try:
        raw = path.read_bytes()
    except OSError as error:
        problems.append(Problem(name, 0, f"cannot read: {error}"))
        return {}
    table: dict[str, tuple[str, int]] = {}
    previous = None
    if raw.startswith(b"\xef\xbb\xbf"):
        problems.append(Problem(name, 1, "starts with a UTF-8 byte-order mark"))
        raw = raw[3:]
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        if not line_bytes.strip():
            continue
        if line_bytes.endswith(b"\r"):
            problems.append(Problem(name, number, "CRLF line ending (convert with dos2unix)"))
            line_bytes = line_bytes[:-1]
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as error:
            problems.append(Problem(name, number, f"not valid UTF-8 (byte {error.start})",
                                    line_bytes.split()[0].decode("utf-8", "replace")))
            continue
        parts = FIELD_SEPARATOR.split(line.strip(" \t"), maxsplit=1)  # Kaldi: fields are split on spaces/tabs
        if not parts[0]:
            continue
        key = parts[0]
        value = parts[1].strip(" \t") if len(parts) > 1 else ""
        if len([f for f in FIELD_SEPARATOR.split(value) if f]) < min_fields - 1:
            problems.append(Problem(name, number, f"expected at least {min_fields} fields", key))
            continue
        if key in table:
            problems.append(Problem(name, number, f"duplicate id {key!r} (first on line {table[key][1]})", key))
            continue
        if previous is not None and key < previous:
            problems.append(Problem(name, number, f"not sorted: {key!r} comes after {previous!r} (sort with LC_ALL=C)"))
        previous = key
        table[key] = (value, number)
    return table


def _segments(path: Path, problems, recordings) -> dict[str, tuple[str, float, float, int]]:
    name = f"{path.parent.name}/{path.name}"
    result = {}
    for utt, (value, number) in read_table(path, problems, min_fields=4).items():
        rec, start, end = value.split()[:3]
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            problems.append(Problem(name, number, f"start/end are not numbers: {start!r} {end!r}", utt))
            continue
        if start_s < 0 or (end_s != -1 and end_s <= start_s):
            problems.append(Problem(name, number, f"bad segment times [{start_s}, {end_s}]", utt))
            continue
        if rec not in recordings:
            problems.append(Problem(name, number, f"recording {rec!r} is not in wav.scp", utt))
            continue
        result[utt] = (rec, start_s, end_s, number)
    return result


SEGMENT_TOLERANCE_S = 0.05  # a segment may end this much after its recording (rounding of times)


def _check_segment_bounds(path: Path, segments, recordings, problems) -> None:
    """Segments must lie inside their recording (plain files only: a pipe's length is known once it runs)."""
    import soundfile as sf

    durations: dict[str, float | None] = {}
    for utt, (rec, start, end, number) in segments.items():
        location = recordings[rec][0]
        if location.endswith("|") or not Path(location).is_file():
            continue
        if rec not in durations:
            try:
                info = sf.info(location)
                durations[rec] = info.frames / info.samplerate
            except (sf.LibsndfileError, RuntimeError, OSError):
                durations[rec] = None
                problems.append(Problem(f"{path.name}/wav.scp", recordings[rec][1], f"cannot read the audio header of "
                                        f"{location}", None))
        duration = durations[rec]
        if duration is not None and (start >= duration or end > duration + SEGMENT_TOLERANCE_S):
            problems.append(Problem(f"{path.name}/segments", number, f"segment [{start}, {end}] s lies outside "
                                    f"recording {rec} ({duration:.2f} s)", utt))


def read_data_dir(
    path: str | os.PathLike, *, require_text: bool = False, fix: bool = False, check_audio: bool = True,
    language: str | None = None,
) -> DataDir:
    """Read and validate a data dir. Raises :class:`DataDirError` listing every problem unless ``fix``."""
    path = Path(path)
    if not path.is_dir():
        raise DataDirError(path, [Problem(str(path), 0, "data directory does not exist")])
    problems: list[Problem] = []
    if not (path / "wav.scp").is_file():
        raise DataDirError(path, [Problem(f"{path.name}/wav.scp", 0, "missing (every data dir needs wav.scp)")])
    recordings = read_table(path / "wav.scp", problems)
    if (path / "segments").is_file():
        segments = _segments(path / "segments", problems, recordings)
        sources = {utt: AudioSource(recordings[rec][0], start, None if end == -1 else end)
                   for utt, (rec, start, end, _) in segments.items()}
        source_file = "segments"
    else:
        sources = {utt: AudioSource(value) for utt, (value, _) in recordings.items()}
        source_file = "wav.scp"
    if check_audio:
        for rec, (value, number) in recordings.items():
            if not value.endswith("|") and not Path(value).is_file():
                problems.append(Problem(f"{path.name}/wav.scp", number, f"audio file not found: {value}",
                                        rec if source_file == "wav.scp" else None))
                if source_file == "segments":
                    for utt, src in list(sources.items()):
                        if src.location == value:
                            problems.append(Problem(f"{path.name}/segments", 0, f"{utt}: recording {rec} is missing",
                                                    utt))
    if check_audio and source_file == "segments":
        _check_segment_bounds(path, segments, recordings, problems)
    tables = {}
    for name in ("text", "utt2spk", "utt2lang"):
        if (path / name).is_file():
            tables[name] = read_table(path / name, problems, min_fields=1 if name == "text" else 2)
    if "utt2spk" not in tables:
        problems.append(Problem(f"{path.name}/utt2spk", 0, "missing (every data dir needs utt2spk)"))
        tables["utt2spk"] = {}
    if require_text and "text" not in tables:
        raise DataDirError(path, [Problem(f"{path.name}/text", 0, "missing, but transcripts are required")])
    for utt, (value, number) in tables.get("text", {}).items():
        if not value.strip():
            problems.append(Problem(f"{path.name}/text", number, f"empty transcript for {utt!r}", utt))
    # every id must appear in every per-utterance file
    id_sets = {source_file: set(sources), **{name: set(t) for name, t in tables.items()}}
    everyone = set().union(*id_sets.values())
    for name, ids in id_sets.items():
        for utt in sorted(everyone - ids):
            others = [n for n, s in id_sets.items() if utt in s]
            problems.append(Problem(f"{path.name}/{name}", 0, f"{utt!r} is in {', '.join(others)} but not here", utt))
    if problems and not fix:
        raise DataDirError(path, problems)
    bad = {p.key for p in problems if p.key is not None}
    keep = sorted(set.intersection(*id_sets.values()) - bad)
    utterances = [
        Utterance(
            utt_id=utt,
            source=sources[utt],
            speaker=tables["utt2spk"][utt][0],
            text=tables["text"][utt][0] if "text" in tables else None,
            language=tables["utt2lang"][utt][0] if "utt2lang" in tables else language,
        )
        for utt in keep
    ]
    return DataDir(path, utterances, problems, dropped=len(everyone) - len(keep))


def write_data_dir(path: str | os.PathLike, utterances: list[Utterance], recordings: dict[str, str] | None = None,
                   segments: dict[str, tuple[str, float, float]] | None = None) -> None:
    """Write a sorted, valid data dir. Without ``segments``, each utterance's source is its wav.scp entry."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    utts = sorted(utterances, key=lambda u: u.utt_id)

    def write(name, rows):
        (path / name).write_text("".join(f"{k} {v}\n" for k, v in sorted(rows)), encoding="utf-8")

    if segments:
        write("wav.scp", recordings.items())
        write("segments", [(u, f"{rec} {start:.2f} {end:.2f}") for u, (rec, start, end) in segments.items()])
    else:
        write("wav.scp", [(u.utt_id, u.source.location) for u in utts])
    if any(u.text is not None for u in utts):
        write("text", [(u.utt_id, u.text) for u in utts])
    write("utt2spk", [(u.utt_id, u.speaker) for u in utts])
    speakers: dict[str, list[str]] = {}
    for u in utts:
        speakers.setdefault(u.speaker, []).append(u.utt_id)
    write("spk2utt", [(s, " ".join(sorted(us))) for s, us in speakers.items()])
    if any(u.language for u in utts):
        write("utt2lang", [(u.utt_id, u.language) for u in utts])


def fix_data_dir(path: str | os.PathLike, check_audio: bool = True) -> DataDir:
    """Drop every offending entry and rewrite ``path`` sorted and consistent, like Kaldi's
    ``utils/fix_data_dir.sh``; the original files are kept in ``path/.backup/``. Returns what was read
    (``problems`` and ``dropped`` say what was removed)."""
    import shutil

    path = Path(path)
    data = read_data_dir(path, fix=True, check_audio=check_audio)
    recordings = segments = None
    if (path / "segments").is_file():
        ignored: list[Problem] = []
        recordings = {rec: value for rec, (value, _) in read_table(path / "wav.scp", ignored).items()}
        rec_of = {value: rec for rec, value in recordings.items()}
        segments = {u.utt_id: (rec_of[u.source.location], u.source.start, -1 if u.source.end is None else u.source.end)
                    for u in data.utterances}
        used = {rec for rec, _, _ in segments.values()}
        recordings = {rec: value for rec, value in recordings.items() if rec in used}
    backup = path / ".backup"
    backup.mkdir(exist_ok=True)
    for name in ("wav.scp", "segments", "text", "utt2spk", "spk2utt", "utt2lang"):
        if (path / name).is_file():
            shutil.copy2(path / name, backup / name)
            (path / name).unlink()
    write_data_dir(path, data.utterances, recordings, segments)
    return data
