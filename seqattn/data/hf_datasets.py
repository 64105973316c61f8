"""Hugging Face ``datasets`` as input: ``save_to_disk`` directories, and parquet/arrow files or folders.

IndicVoices, Kathbath, Vistaar and FLEURS ship as HF datasets. Every seqattn command that reads utterances
(pretrain, finetune, transcribe, analyze) and eval-lm accept one wherever they accept a Kaldi data dir, as
a *dataset spec*: a path, optionally followed by a query that picks the split and maps columns::

    data/fleurs_hi                                    # a save_to_disk directory (Dataset or DatasetDict)
    data/fleurs_hi?split=test&text=transcription      # a split of a DatasetDict; the transcript column
    shards/train-*.parquet?language=lang_id           # parquet (or .arrow) files, loaded with load_dataset
    hub_download/?split=validation                    # a folder of parquet/arrow files, splits by file name

Columns: ``audio`` (default: the first column with an ``Audio`` feature), ``text`` (default: the first of
text, sentence, transcription, transcript, normalized_text, raw_transcription), ``language`` (default: the
first of language, lang, locale, lang_id), ``id`` (default: id, utt_id, when its values are unique). ClassLabel
columns give their names. Audio is decoded here with soundfile from the bytes the dataset stores (or the file
its ``path`` names), never through ``datasets``' own decoding, which needs torchcodec.
"""
from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from seqattn.errors import SeqattnError

from .audio import AudioError, EmbeddedAudio
from .kaldi import Utterance

TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text", "raw_transcription")
LANGUAGE_COLUMNS = ("language", "lang", "locale", "lang_id")
ID_COLUMNS = ("id", "utt_id")
SPEC_KEYS = ("split", "audio", "text", "language", "id")
DATA_FILE_SUFFIXES = (".parquet", ".arrow")


class DatasetSpecError(SeqattnError, ValueError):
    """A dataset spec that does not name a usable dataset, split or column; the message says which."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset is and how to read it: the path and the query's choices (None: the default)."""

    path: str
    split: str | None = None
    audio: str | None = None
    text: str | None = None
    language: str | None = None
    id: str | None = None

    @classmethod
    def parse(cls, spec: str) -> DatasetSpec:
        path, _, query = str(spec).partition("?")
        options = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(options) - set(SPEC_KEYS))
        if unknown:
            raise DatasetSpecError(f"{spec}: unknown dataset option(s) {', '.join(unknown)} (known: "
                                   f"{', '.join(SPEC_KEYS)})")
        return cls(path, **{key: value or None for key, value in options.items()})

    def __str__(self) -> str:
        query = "&".join(f"{key}={getattr(self, key)}" for key in SPEC_KEYS if getattr(self, key) is not None)
        return f"{self.path}?{query}" if query else self.path


def _is_saved_dataset(path: Path) -> bool:
    """A ``save_to_disk`` directory: a DatasetDict's ``dataset_dict.json`` or a Dataset's ``state.json``."""
    return path.is_dir() and any((path / name).is_file() for name in ("dataset_dict.json", "state.json"))


def _holds_data_files(path: Path) -> bool:
    return any(p.suffix in DATA_FILE_SUFFIXES for p in path.rglob("*"))  # stops at the first one


def is_dataset_spec(spec: str | os.PathLike) -> bool:
    """True for a save_to_disk directory, parquet/arrow files (a glob allowed) or a folder of them (not a
    Kaldi data dir), with or without a ``?query``; an existing file of another kind never is."""
    text = str(spec)
    if Path(text).is_file() and not text.endswith(DATA_FILE_SUFFIXES):
        return False  # an audio file or manifest, even with a '?' in its name
    path_text, sep, _ = text.partition("?")
    path = Path(path_text)
    if _is_saved_dataset(path):
        return True
    if path.is_dir():
        return not (path / "wav.scp").exists() and (sep == "?" or _holds_data_files(path))
    return path_text.endswith(DATA_FILE_SUFFIXES) or sep == "?"


@functools.lru_cache(maxsize=16)
def open_dataset(spec: DatasetSpec):
    """The split a spec names (a ``datasets.Dataset``); cached per process, memory-mapped, cheap to repeat."""
    from seqattn.utils.extras import require

    datasets = require("datasets", "datasets", "reading HF datasets")
    path = Path(spec.path)
    try:
        if _is_saved_dataset(path):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_dir():
            loaded = datasets.load_dataset(str(path))
        else:
            files = sorted(str(p) for p in path.parent.glob(path.name)) if any(c in path.name for c in "*?[") \
                else [str(path)]
            if not files or not all(Path(f).is_file() for f in files):
                raise DatasetSpecError(f"{spec}: no such dataset file(s)")
            kind = "arrow" if files[0].endswith(".arrow") else "parquet"
            loaded = datasets.load_dataset(kind, data_files={spec.split or "train": files})
    except DatasetSpecError:
        raise
    except Exception as error:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...)
        raise DatasetSpecError(f"{spec}: cannot load it with datasets: {type(error).__name__}: "
                               f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = sorted(loaded)
        if spec.split is None and len(splits) != 1:
            raise DatasetSpecError(f"{spec}: holds splits {', '.join(splits)}; choose one with ?split=NAME")
        name = spec.split or splits[0]
        if name not in loaded:
            raise DatasetSpecError(f"{spec}: has no split {name!r} (it has {', '.join(splits)})")
        loaded = loaded[name]
    return loaded


@functools.lru_cache(maxsize=16)
def _audio_rows(spec: DatasetSpec, column: str):
    """The audio column alone, as arrow rows: indexing one reads just that row's struct of bytes and path."""
    return open_dataset(spec).select_columns([column]).with_format("arrow")


def _column(dataset, spec: DatasetSpec, wanted: str | None, defaults: tuple[str, ...], role: str) -> str | None:
    if wanted is not None:
        if wanted not in dataset.column_names:
            raise DatasetSpecError(f"{spec}: no {role} column {wanted!r} (columns: {', '.join(dataset.column_names)})")
        return wanted
    return next((name for name in defaults if name in dataset.column_names), None)


def _audio_column(dataset, spec: DatasetSpec) -> str:
    from datasets import Audio

    if spec.audio is not None:
        return _column(dataset, spec, spec.audio, (), "audio")
    for name, feature in dataset.features.items():
        if isinstance(feature, Audio):
            return name
    if "audio" in dataset.column_names:
        return "audio"
    raise DatasetSpecError(f"{spec}: no Audio column (columns: {', '.join(dataset.column_names)}); name it with "
                           "?audio=COLUMN")


def _strings(dataset, column: str | None) -> list[str | None] | None:
    """A column's values as strings (ClassLabel ids as their names), or None without the column."""
    if column is None:
        return None
    from datasets import ClassLabel

    values = dataset[column]
    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        return [None if value is None else feature.int2str(int(value)) for value in values]
    return [None if value is None else str(value) for value in values]


@dataclass(frozen=True)
class DatasetAudio(EmbeddedAudio):
    """Row ``row`` of a dataset's audio column; ``location`` is the dataset spec (for messages and reopening)."""

    row: int = 0
    column: str = "audio"

    def __str__(self) -> str:
        return f"{self.location} row {self.row} ({self.column!r})"

    def open(self):
        """The stored audio: a file-like object over its bytes, or the path of the file it names."""
        try:
            value = _audio_rows(DatasetSpec.parse(self.location), self.column)[self.row][self.column][0].as_py()
        except (IndexError, KeyError) as error:
            raise AudioError(f"{self}: cannot be read ({error})") from None
        if isinstance(value, dict) and value.get("bytes"):
            return io.BytesIO(value["bytes"])
        file = value.get("path") if isinstance(value, dict) else None
        if file:
            if not os.path.isabs(file):
                file = os.path.join(DatasetSpec.parse(self.location).path, file)
            if os.path.isfile(file):
                return file
            raise AudioError(f"{self}: holds no audio bytes and its path {file} does not exist")
        raise AudioError(f"{self}: holds neither audio bytes nor a path")


def read_dataset(spec_text: str, language: str | None = None) -> list[Utterance]:
    """Every row of the spec's split as an :class:`Utterance` (audio read lazily, row by row)."""
    spec = DatasetSpec.parse(spec_text)
    dataset = open_dataset(spec)
    audio = _audio_column(dataset, spec)
    texts = _strings(dataset, _column(dataset, spec, spec.text, TEXT_COLUMNS, "text"))
    languages = _strings(dataset, _column(dataset, spec, spec.language, LANGUAGE_COLUMNS, "language"))
    ids = _strings(dataset, _column(dataset, spec, spec.id, ID_COLUMNS, "id"))
    if ids is not None and (len(set(ids)) != len(ids) or None in ids):
        if spec.id is not None:
            raise DatasetSpecError(f"{spec}: the id column {spec.id!r} repeats values or has empty ones")
        ids = None  # FLEURS's id names the sentence, shared by its speakers: not an utterance id
    stem = Path(spec.path.rstrip("/")).stem or "dataset"
    source = str(spec)
    return [
        Utterance(
            utt_id=ids[row] if ids is not None else f"{stem}-{row:07d}",
            source=DatasetAudio(source, row=row, column=audio),
            speaker="unknown",
            text=texts[row] if texts is not None else None,
            language=language or (languages[row] if languages is not None else None),
        )
        for row in range(len(dataset))
    ]


def dataset_text_column(spec_text: str) -> list[str]:
    """The text column of a dataset (for eval-lm): one string per row, missing values skipped."""
    spec = DatasetSpec.parse(spec_text)
    dataset = open_dataset(spec)
    column = _column(dataset, spec, spec.text, TEXT_COLUMNS, "text")
    if column is None:
        raise DatasetSpecError(f"{spec}: no text column (columns: {', '.join(dataset.column_names)}); name it with "
                               "?text=COLUMN")
    return [value for value in _strings(dataset, column) if value is not None]

