"""n-gram LMs and lexicons for beam search: KenLM's ``lmplz``/``build_binary`` driven from Python.

The lexicon maps every word of the LM's vocabulary to its characters followed by the word boundary ``|``
(flashlight's format), keeping only words whose characters the acoustic model can emit.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

from seqattn.data.text import CharVocabulary
from seqattn.errors import SeqattnError


class KenLMError(SeqattnError, RuntimeError):
    pass


def find_kenlm_tool(name: str) -> str:
    """``lmplz``/``build_binary`` from $KENLM_BIN, tools/kenlm/bin, or the PATH."""
    candidates = [os.environ.get("KENLM_BIN", ""), str(Path(__file__).resolve().parents[2] / "tools" / "kenlm" / "bin")]
    for directory in candidates:
        path = Path(directory) / name
        if directory and path.is_file():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise KenLMError(f"{name} not found: run tools/install_kenlm.sh or set KENLM_BIN")
    return found


def normalized_corpus(texts, vocab: CharVocabulary, language: str | None = None) -> list[str]:
    """Normalised sentences that the model can spell. A sentence with words the vocabulary cannot spell is cut
    at them: each stretch of spellable words between them is kept as a sentence of its own, so one foreign
    word costs the LM and lexicon that word and the n-grams across it, not the whole sentence."""
    sentences = []
    for text in texts:
        normalized = vocab.normalize(text)
        if not normalized:
            continue
        if not vocab.missing(normalized, language):
            sentences.append(normalized)
            continue
        stretch: list[str] = []
        for word in normalized.split() + [None]:  # None closes the last stretch
            if word is not None and not vocab.missing(word, language):
                stretch.append(word)
            elif stretch:
                sentences.append(" ".join(stretch))
                stretch = []
    return sentences


def build_lm(sentences: list[str], out_dir: str | os.PathLike, order: int = 3, binary: bool = True) -> Path:
    """Train an ``order``-gram KenLM (modified Kneser-Ney with lmplz) on ``sentences``; returns the model path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    arpa = out / f"lm.{order}gram.arpa"
    with open(corpus, "rb") as stdin, open(arpa, "wb") as stdout:
        # --discount_fallback: small corpora lack the count-of-counts Kneser-Ney discounts need
        proc = subprocess.run([find_kenlm_tool("lmplz"), "-o", str(order), "--discount_fallback"], stdin=stdin,
                              stdout=stdout, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise KenLMError(f"lmplz failed: {proc.stderr.decode(errors='replace')[-500:]}")
    if not binary:
        return arpa
    model = out / f"lm.{order}gram.bin"
    proc = subprocess.run([find_kenlm_tool("build_binary"), str(arpa), str(model)], capture_output=True)
    if proc.returncode != 0:
        raise KenLMError(f"build_binary failed: {proc.stderr.decode(errors='replace')[-500:]}")
    return model


def write_lexicon(sentences: list[str], vocab: CharVocabulary, path: str | os.PathLike, min_count: int = 1,
                  language: str | None = None) -> int:
    """Write ``word s p e l l i n g |`` lines (the spelling in the model's labels) for every word seen
    ``min_count`` times; returns the word count."""
    counts = Counter(word for sentence in sentences for word in sentence.split())
    lines = [f"{word} {' '.join(vocab.spelling(word, language))} |" for word, n in sorted(counts.items())
             if n >= min_count and not vocab.missing(word, language)]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)
