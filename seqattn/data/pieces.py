"""Sentencepiece output units for CTC: words spelled in learnt pieces instead of single characters.

Each word is encoded on its own (the model is trained on words, without sentencepiece's word-start marker),
and words are joined by ``|`` exactly as in :class:`CharVocabulary`, so greedy and beam decoding, forced
alignment and lexicons treat pieces and characters alike: a lexicon entry is the word's pieces, then ``|``.
The trained sentencepiece model is kept inside ``tokens.json`` (base64), so a model directory stays
self-contained and loading it runs no pickled code.
"""
from __future__ import annotations

import base64
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .text import BLANK, UNK, WORD_BOUNDARY, CharVocabulary, VocabularyError, check_vocabulary_values


@dataclass
class PieceVocabulary(CharVocabulary):
    """tokens: ``<blank> <unk> |`` then the sentencepiece pieces; ``model`` is the serialized sentencepiece model."""

    model: bytes = b""
    _processor: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        super().__post_init__()
        import sentencepiece

        self._processor = sentencepiece.SentencePieceProcessor(model_proto=self.model)
        self._characters = {c for piece in self.tokens[3:] for c in piece}

    @classmethod
    def build(cls, texts, strip_punctuation: bool = True, lowercase: bool = False, min_count: int = 1,
              languages=None, common_script: bool = False, size: int = 200):
        """Train a unigram sentencepiece model of about ``size`` pieces on the words of ``texts``."""
        import sentencepiece

        spelling = CharVocabulary([BLANK, UNK, WORD_BOUNDARY], strip_punctuation, lowercase, common_script)
        languages = list(languages) if languages is not None else [None] * len(texts)
        words = Counter(w for text, language in zip(texts, languages)
                        for w in spelling.label_text(text, language).split())
        if not words:
            raise VocabularyError("no training text to learn sentencepieces from")
        characters = {c for w in words for c in w}
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "words.txt"
            corpus.write_text("".join(f"{w}\n" * n for w, n in sorted(words.items())), encoding="utf-8")
            size = max(size, len(characters) + 2)
            for _ in range(6):  # small corpora cannot support every requested size
                try:
                    sentencepiece.SentencePieceTrainer.train(
                        input=str(corpus), model_prefix=str(Path(tmp) / "sp"), model_type="unigram",
                        vocab_size=size, character_coverage=1.0, add_dummy_prefix=False, bos_id=-1, eos_id=-1,
                        unk_id=0, hard_vocab_limit=False, minloglevel=2, split_by_whitespace=True,
                        # the words are already normalised as the references are; sentencepiece's default NFKC
                        # rules would drop the zero-width (non-)joiners Indic spellings need, and split words there
                        normalization_rule_name="identity")
                    break
                except RuntimeError:
                    size = max(len(characters) + 2, int(size * 0.7))
            model = (Path(tmp) / "sp.model").read_bytes()
        processor = sentencepiece.SentencePieceProcessor(model_proto=model)
        pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size()) if not processor.is_unknown(i)]
        pieces = [p for p in pieces if p not in (BLANK, UNK, WORD_BOUNDARY)]
        return cls([BLANK, UNK, WORD_BOUNDARY] + pieces, strip_punctuation, lowercase, common_script, model)

    def spell(self, word: str) -> list[str]:
        return list(self._processor.encode(word, out_type=str))

    def unknown_characters(self, label_text: str) -> set[str]:
        return {c for c in label_text.replace(" ", "") if c not in self._characters}

    def to_json(self) -> str:
        import json

        return json.dumps({"type": "sentencepiece", "tokens": self.tokens, "strip_punctuation":
                           self.strip_punctuation, "lowercase": self.lowercase, "common_script": self.common_script,
                           "model": base64.b64encode(self.model).decode("ascii")}, ensure_ascii=False, indent=1)

    @classmethod
    def from_values(cls, values: dict, path: str | os.PathLike) -> PieceVocabulary:
        if values.get("type") != "sentencepiece" or not isinstance(values.get("tokens"), list):
            raise VocabularyError(f"{path} is not a seqattn sentencepiece vocabulary")
        check_vocabulary_values(values, path)
        try:
            model = base64.b64decode(values["model"], validate=True)
            return cls(values["tokens"], values.get("strip_punctuation", True), values.get("lowercase", False),
                       values.get("common_script", False), model)
        except (KeyError, ValueError, RuntimeError) as error:
            raise VocabularyError(f"{path}: not a valid sentencepiece vocabulary ({error})") from None
