"""Where a training command's data comes from, as written in its config: a path and, optionally, a language."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataSource:
    """One entry of ``data.train`` / ``data.valid``.

    ``path`` is a Kaldi data dir, a fairseq ``.tsv`` or JSONL manifest, or an HF dataset (a ``save_to_disk``
    directory or parquet/arrow files; :mod:`seqattn.data.hf_datasets`). For a dataset, ``split`` and the
    ``*_column`` fields choose the split and map its columns (None: the defaults that module lists); they may
    also be written into the path as a query (``data/fleurs?split=train&text=transcription``).
    """

    path: str
    language: str | None = None  # the language of every utterance in it (else utt2lang or the manifest says)
    split: str | None = None
    audio_column: str | None = None
    text_column: str | None = None
    language_column: str | None = None
    id_column: str | None = None

    @property
    def location(self) -> str:
        """The path, with the dataset options as its query when any is set."""
        options = {"split": self.split, "audio": self.audio_column, "text": self.text_column,
                   "language": self.language_column, "id": self.id_column}
        query = "&".join(f"{key}={value}" for key, value in options.items() if value is not None)
        if not query:
            return self.path
        return f"{self.path}{'&' if '?' in self.path else '?'}{query}"
