"""A CTC model's output vocabulary on disk: ``tokens.json`` beside the weights, of either kind.

``{"type": "char", ...}`` is a :class:`~seqattn.data.text.CharVocabulary` (one label per character);
``{"type": "sentencepiece", ...}`` a :class:`~seqattn.data.pieces.PieceVocabulary` (learnt word pieces, the
sentencepiece model embedded). :func:`load_vocabulary` reads either; this module sits above both, so neither
class needs to know the other.
"""
from __future__ import annotations

import os

from .pieces import PieceVocabulary
from .text import CharVocabulary, read_vocabulary_values

VOCAB_FILE = "tokens.json"  # the vocabulary's file name in every CTC model directory


def load_vocabulary(path: str | os.PathLike) -> CharVocabulary:
    """The vocabulary saved at ``path``, as the class its ``type`` names; a clear error for anything else."""
    values = read_vocabulary_values(path)
    kind = PieceVocabulary if values.get("type") == "sentencepiece" else CharVocabulary
    return kind.from_values(values, path)
