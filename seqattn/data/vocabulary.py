"""A CTC model's output vocabulary on disk: ``tokens.json`` beside the weights, of either kind.

``{"type": "char", ...}`` is a :class:`~seqattn.data.text.CharVocabulary` (one label per character);
``{"type": "sentencepiece", ...}`` a :class:`~seqattn.data.pieces.PieceVocabulary` (learnt word pieces, the
sentencepiece model embedded). :func:`load_vocabulary` reads either; this module sits above both, so neither
class needs to know the other.
"""
from __future__ import annotations

import json
import os

from .pieces import PieceVocabulary
from .text import CharVocabulary, VocabularyError, read_vocabulary_values

VOCAB_FILE = "tokens.json"  # the vocabulary's file name in every CTC model directory


def load_vocabulary(path: str | os.PathLike) -> CharVocabulary:
    """The vocabulary saved at ``path``, as the class its ``type`` names; a clear error for anything else."""
    return _from_values(read_vocabulary_values(path), path)


def _from_values(values: dict, where) -> CharVocabulary:
    kind = PieceVocabulary if values.get("type") == "sentencepiece" else CharVocabulary
    return kind.from_values(values, where)


def vocabulary_from_json(text: str, where: str) -> CharVocabulary:
    """A vocabulary from the text of a ``tokens.json`` kept elsewhere (an ONNX file's metadata, say)."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise VocabularyError(f"{where}: the vocabulary is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise VocabularyError(f"{where}: the vocabulary is not a JSON object with a 'type'")
    return _from_values(values, where)
