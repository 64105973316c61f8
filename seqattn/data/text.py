"""Transcript normalisation and the character vocabulary of CTC models.

Indic scripts need Unicode NFC: the same grapheme can arrive composed or decomposed (a nukta consonant,
say), and without normalisation the two spellings become different labels. Words are separated by ``|``
(fairseq's ``.ltr`` convention) and index 0 is the CTC blank.
"""
from __future__ import annotations

import json
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from seqattn.errors import SeqattnError

BLANK, UNK, WORD_BOUNDARY = "<blank>", "<unk>", "|"
SILENT_TOKENS = frozenset({"<pad>", "</s>", "<s>"})  # outputs of imported fairseq models that write no text


def normalize_text(text: str, strip_punctuation: bool = True, lowercase: bool = False) -> str:
    """NFC, optionally drop punctuation (Unicode categories P*) and lowercase, collapse whitespace.

    Indic sentence marks (danda ``।``, double danda ``॥``) are punctuation (category Po) and go too.
    """
    text = unicodedata.normalize("NFC", text)
    if strip_punctuation:
        text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    if lowercase:
        text = text.lower()
    return " ".join(text.split())


class VocabularyError(SeqattnError, ValueError):
    """Characters missing from the vocabulary (the message lists them), or an unreadable vocabulary file."""


def check_vocabulary_values(values: dict, path) -> None:
    """The parts every vocabulary file shares: tokens are distinct strings, the options are booleans."""
    tokens = values["tokens"]
    if not all(isinstance(token, str) for token in tokens):
        wrong = next(token for token in tokens if not isinstance(token, str))
        raise VocabularyError(f"{path}: tokens must be strings, found {wrong!r}")
    seen = set()
    for token in tokens:
        if token in seen:
            raise VocabularyError(f"{path}: token {token!r} appears twice")
        seen.add(token)
    for option in ("strip_punctuation", "lowercase", "common_script"):
        if option in values and not isinstance(values[option], bool):
            raise VocabularyError(f"{path}: {option} must be true or false, got {values[option]!r}")


def read_vocabulary_values(path: str | os.PathLike) -> dict:
    """The JSON object of a vocabulary file, or a VocabularyError naming the file."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VocabularyError(f"vocabulary file {path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise VocabularyError(f"vocabulary file {path} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise VocabularyError(f"{path} is not a seqattn vocabulary (a JSON object with a 'type')")
    return values


@dataclass
class CharVocabulary:
    """tokens[0] is the blank, tokens[1] ``<unk>``, tokens[2] the word boundary ``|``, then characters."""

    tokens: list[str]
    strip_punctuation: bool = True
    lowercase: bool = False
    common_script: bool = False  # Indic scripts share one label set (seqattn.data.indic); needs each text's language

    def __post_init__(self):
        if self.tokens[:3] != [BLANK, UNK, WORD_BOUNDARY]:
            raise ValueError(f"a vocabulary must start with {BLANK}, {UNK}, {WORD_BOUNDARY}")
        self.index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts, strip_punctuation: bool = True, lowercase: bool = False, min_count: int = 1,
              languages=None, common_script: bool = False):
        """The characters of ``texts`` (with ``common_script``, of their common-label spelling, for which
        ``languages`` gives each text's language)."""
        vocab = cls([BLANK, UNK, WORD_BOUNDARY], strip_punctuation, lowercase, common_script)
        languages = list(languages) if languages is not None else [None] * len(texts)
        counts = Counter()
        for text, language in zip(texts, languages):
            counts.update(vocab.label_text(text, language).replace(" ", ""))
        chars = sorted(c for c, n in counts.items() if n >= min_count)
        return cls([BLANK, UNK, WORD_BOUNDARY] + chars, strip_punctuation, lowercase, common_script)

    def label_text(self, text: str, language: str | None = None) -> str:
        """The normalised text as the model spells it: native characters, or common labels."""
        normalized = self.normalize(text)
        if not self.common_script:
            return normalized
        if language is None:
            raise VocabularyError("this vocabulary uses the common Indic label set: the text's language is needed")
        from .indic import UnknownLanguageError, to_common

        try:
            return to_common(normalized, language)
        except UnknownLanguageError as error:
            raise VocabularyError(str(error)) from None

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def blank(self) -> int:
        return 0

    def normalize(self, text: str) -> str:
        return normalize_text(text, self.strip_punctuation, self.lowercase)

    def missing(self, text: str, language: str | None = None) -> set[str]:
        """Characters of ``text`` that the model cannot write."""
        return self.unknown_characters(self.label_text(text, language))

    def unknown_characters(self, label_text: str) -> set[str]:
        return {c for c in label_text.replace(" ", "") if c not in self.index}

    def encode(self, text: str, allow_unknown: bool = False, language: str | None = None) -> list[int]:
        """Normalised text -> ids with ``|`` between words (no leading/trailing boundary)."""
        normalized = self.label_text(text, language)
        missing = self.unknown_characters(normalized)
        if missing and not allow_unknown:
            shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in sorted(missing))
            raise VocabularyError(f"characters not in the vocabulary: {shown}")
        ids = []
        for w, word in enumerate(normalized.split()):
            if w:
                ids.append(self.index[WORD_BOUNDARY])
            ids.extend(self.index.get(unit, self.index[UNK]) for unit in self.spell(word))
        return ids

    def spell(self, word: str) -> list[str]:
        """A word (already in label form) as output units: its characters here, pieces in subclasses."""
        return list(word)

    def spelling(self, word: str, language: str | None = None) -> list[str]:
        """The output units of a (raw) word, e.g. for a beam-search lexicon."""
        return self.spell(self.label_text(word, language))

    def decode(self, ids, language: str | None = None) -> str:
        """Ids (already collapsed, no blanks) -> text with spaces for word boundaries; a common-label vocabulary
        writes the ``language``'s script (common labels when the language is unknown)."""
        boundary = self.index[WORD_BOUNDARY]
        text = "".join(WORD_BOUNDARY if i == boundary else self.tokens[i] for i in ids
                       if i > 0 and self.tokens[i] not in SILENT_TOKENS)
        text = " ".join(part for part in text.split(WORD_BOUNDARY) if part)
        if self.common_script and language is not None:
            from .indic import from_common

            text = from_common(text, language)
        return text

    def to_json(self) -> str:
        """The ``tokens.json`` text: tokens in output order plus the normalisation settings."""
        return json.dumps({"type": "char", "tokens": self.tokens, "strip_punctuation": self.strip_punctuation,
                           "lowercase": self.lowercase, "common_script": self.common_script},
                          ensure_ascii=False, indent=1)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharVocabulary:
        """A vocabulary file of this class's kind (:func:`seqattn.data.vocabulary.load_vocabulary` reads any)."""
        return cls.from_values(read_vocabulary_values(path), path)

    @classmethod
    def from_values(cls, values: dict, path: str | os.PathLike) -> CharVocabulary:
        """From the parsed JSON of a ``{"type": "char"}`` vocabulary file."""
        if values.get("type") != "char" or not isinstance(values.get("tokens"), list):
            raise VocabularyError(f"{path} is not a seqattn character vocabulary")
        check_vocabulary_values(values, path)
        try:
            return cls(values["tokens"], values.get("strip_punctuation", True), values.get("lowercase", False),
                       values.get("common_script", False))
        except ValueError as error:
            raise VocabularyError(f"{path}: {error}") from None
