"""Tokenizers for language models: bytes, characters, whitespace words, or sentencepiece (unigram/BPE).

Every tokenizer has a ``<bos>`` token (id 0 for char/word/sentencepiece, 256 for bytes) that starts each
document, so evaluation can score the first token of a file too. Newlines are tokens (a byte, a
character, ``<eos>`` for words, a dedicated id for sentencepiece), so text is encoded line by line and
decoded back with its line structure. A tokenizer is saved as ``tokenizer.json`` (values only; the
sentencepiece model is embedded in base64), and loading reads its ``type`` field through an explicit table.
"""
from __future__ import annotations

import base64
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from seqattn.errors import SeqattnError

TOKENIZER_FILE = "tokenizer.json"
BOS, UNK, EOS = "<bos>", "<unk>", "<eos>"


class TokenizerError(SeqattnError, ValueError):
    """A missing, unreadable or unsuitable tokenizer."""


def iter_text(paths, chunk_chars: int = 1 << 20):
    """Stream the text of files in chunks that end at line boundaries (strict UTF-8)."""
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            rest = ""
            while True:
                block = handle.read(chunk_chars)
                if not block:
                    break
                block = rest + block
                cut = block.rfind("\n") + 1
                if cut == 0:
                    rest = block
                    continue
                rest = block[cut:]
                yield block[:cut]
            if rest:
                yield rest


@dataclass
class ByteTokenizer:
    """UTF-8 bytes 0..255, and ``<bos>`` = 256."""

    kind = "byte"

    @property
    def vocab_size(self) -> int:
        return 257

    @property
    def bos_id(self) -> int:
        return 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"type": self.kind}


@dataclass
class _TokenList:
    """A tokenizer defined by its token list, ``<bos>`` first."""

    tokens: list[str]
    kind = ""

    def __post_init__(self):
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def bos_id(self) -> int:
        return 0

    def to_dict(self) -> dict:
        return {"type": self.kind, "tokens": self.tokens}


@dataclass
class CharTokenizer(_TokenList):
    """``<bos>``, ``<unk>``, then the characters of the training text."""

    kind = "char"

    @classmethod
    def train(cls, paths, min_count: int = 1) -> CharTokenizer:
        counts = Counter()
        for chunk in iter_text(paths):
            counts.update(chunk)
        return cls([BOS, UNK] + sorted(c for c, n in counts.items() if n >= min_count))

    def encode(self, text: str) -> list[int]:
        unk = self.index[UNK]
        return [self.index.get(c, unk) for c in text]

    def decode(self, ids) -> str:
        return "".join(self.tokens[i] for i in ids if i > 1)


@dataclass
class WordTokenizer(_TokenList):
    """Whitespace words (the most frequent ``max_words``), ``<unk>`` for the rest, ``<eos>`` at each line end."""

    kind = "word"

    @classmethod
    def train(cls, paths, max_words: int = 0, min_count: int = 1) -> WordTokenizer:
        counts = Counter()
        for chunk in iter_text(paths):
            counts.update(chunk.split())
        words = sorted((w for w, n in counts.items() if n >= min_count and w not in (BOS, UNK, EOS)),
                       key=lambda w: (-counts[w], w))
        return cls([BOS, UNK, EOS] + (words[:max_words] if max_words else words))

    def encode(self, text: str) -> list[int]:
        unk, eos = self.index[UNK], self.index[EOS]
        ids = []
        for line in text.splitlines(keepends=True):
            ids.extend(self.index.get(w, unk) for w in line.split())
            if line.endswith("\n"):
                ids.append(eos)
        return ids

    def decode(self, ids) -> str:
        out, line = [], []
        for i in ids:
            if i == 2:
                out.append(" ".join(line) + "\n")
                line = []
            elif i > 0:
                line.append(self.tokens[i])
        return "".join(out) + " ".join(line)


@dataclass
class SentencePieceTokenizer:
    """``<bos>`` = 0, sentencepiece ids shifted by one, and a newline id last. The model is kept as bytes."""

    model: bytes
    model_type: str = "unigram"
    kind = "sentencepiece"
    _processor: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        import sentencepiece

        self._processor = sentencepiece.SentencePieceProcessor(model_proto=self.model)

    @classmethod
    def train(cls, paths, vocab_size: int = 8000, model_type: str = "unigram",
              max_sentences: int = 2_000_000) -> SentencePieceTokenizer:
        import sentencepiece

        if model_type not in ("unigram", "bpe"):
            raise TokenizerError(f"sentencepiece model_type must be unigram or bpe, got {model_type!r}")
        with tempfile.TemporaryDirectory() as tmp:
            sentencepiece.SentencePieceTrainer.train(
                input=",".join(str(p) for p in paths), model_prefix=str(Path(tmp) / "sp"), model_type=model_type,
                vocab_size=vocab_size, character_coverage=0.9995, bos_id=-1, eos_id=-1, unk_id=0,
                input_sentence_size=max_sentences, shuffle_input_sentence=True, hard_vocab_limit=False,
                minloglevel=2, train_extremely_large_corpus=False,
            )
            return cls((Path(tmp) / "sp.model").read_bytes(), model_type)

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size() + 2

    @property
    def bos_id(self) -> int:
        return 0

    @property
    def newline_id(self) -> int:
        return self._processor.get_piece_size() + 1

    def encode(self, text: str) -> list[int]:
        ids = []
        for line in text.splitlines(keepends=True):
            ids.extend(i + 1 for i in self._processor.encode(line.rstrip("\n")))
            if line.endswith("\n"):
                ids.append(self.newline_id)
        return ids

    def decode(self, ids) -> str:
        out, piece = [], []
        for i in ids:
            if i == self.newline_id:
                out.append(self._processor.decode(piece) + "\n")
                piece = []
            elif i > 0:
                piece.append(i - 1)
        return "".join(out) + self._processor.decode(piece)

    def to_dict(self) -> dict:
        return {"type": self.kind, "model_type": self.model_type, "model": base64.b64encode(self.model).decode("ascii")}


Tokenizer = ByteTokenizer | CharTokenizer | WordTokenizer | SentencePieceTokenizer


@dataclass
class TokenizerConfig:
    type: str = "char"  # byte, char, word, sentencepiece
    vocab_size: int = 8000  # sentencepiece
    model_type: str = "unigram"  # sentencepiece: unigram or bpe
    max_words: int = 0  # word: keep the most frequent (0 = all)
    min_count: int = 1  # char/word: drop rarer symbols (they become <unk>)


def train_tokenizer(config: TokenizerConfig, paths) -> Tokenizer:
    """Learn a tokenizer from text files (streamed)."""
    for path in paths:
        if not Path(path).is_file():
            raise TokenizerError(f"tokenizer training text {path} does not exist")
    if config.type == "byte":
        return ByteTokenizer()
    if config.type == "char":
        return CharTokenizer.train(paths, config.min_count)
    if config.type == "word":
        return WordTokenizer.train(paths, config.max_words, config.min_count)
    if config.type == "sentencepiece":
        return SentencePieceTokenizer.train(paths, config.vocab_size, config.model_type)
    raise TokenizerError(f"tokenizer type must be byte, char, word or sentencepiece, got {config.type!r}")


def tokenizer_to_json(tokenizer: Tokenizer) -> str:
    return json.dumps(tokenizer.to_dict(), ensure_ascii=False, indent=1)


def tokenizer_from_dict(values: dict) -> Tokenizer:
    kind = values.get("type")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer(list(values["tokens"]))
    if kind == "word":
        return WordTokenizer(list(values["tokens"]))
    if kind == "sentencepiece":
        return SentencePieceTokenizer(base64.b64decode(values["model"]), values.get("model_type", "unigram"))
    raise TokenizerError(f"unknown tokenizer type {kind!r}")


def load_tokenizer(model_dir: str | os.PathLike) -> Tokenizer:
    path = Path(model_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise TokenizerError(f"{model_dir} has no {TOKENIZER_FILE}: a language model directory needs the tokenizer "
                             "it was trained with (train-lm writes it next to the weights)")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(values, dict):
            raise TokenizerError(f"a JSON object with a 'type' was expected, got {type(values).__name__}")
        return tokenizer_from_dict(values)
    except TokenizerError as error:
        raise TokenizerError(f"{path}: {error}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError, RuntimeError) as error:
        raise TokenizerError(f"{path} is not a valid tokenizer file: {type(error).__name__}: {error}") from None
