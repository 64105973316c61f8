"""A common label set for the Brahmic scripts of India: one set of CTC outputs shared by all languages.

Unicode laid out the nine major Indic script blocks (Devanagari U+0900, Bengali U+0980, Gurmukhi U+0A00,
Gujarati U+0A80, Odia U+0B00, Tamil U+0B80, Telugu U+0C00, Kannada U+0C80, Malayalam U+0D00) after ISCII, so
the same offset inside each 128-code-point block is the same letter: क U+0915, ক U+0995, க U+0B95 and ಕ U+0C95
are all KA. Mapping every block onto Devanagari's offsets gives a multilingual model one output per sound-letter
instead of one per script (the "common label set" idea of Indian multilingual ASR): a Tamil KA and a Hindi KA
share their output and their training data. The mapping is reversible given the language, which the data dirs
(``utt2lang``) or the user (``--language``) supply. Characters outside the language's block are kept as they are.
"""
from __future__ import annotations

from seqattn.errors import SeqattnError

BLOCK_SIZE = 0x80
COMMON_BASE = 0x0900  # Devanagari: the common label space
SCRIPT_BASE = {
    "Deva": 0x0900, "Beng": 0x0980, "Guru": 0x0A00, "Gujr": 0x0A80, "Orya": 0x0B00,
    "Taml": 0x0B80, "Telu": 0x0C00, "Knda": 0x0C80, "Mlym": 0x0D00,
}
LANGUAGE_SCRIPT = {
    "hi": "Deva", "mr": "Deva", "ne": "Deva", "kok": "Deva", "mai": "Deva", "sa": "Deva", "doi": "Deva",
    "bn": "Beng", "as": "Beng", "bpy": "Beng", "mni": "Beng", "pa": "Guru", "gu": "Gujr", "or": "Orya",
    "ta": "Taml", "te": "Telu", "kn": "Knda", "ml": "Mlym",
}
SHARED = {0x0964, 0x0965}  # danda and double danda: every script uses Devanagari's


class UnknownLanguageError(SeqattnError, ValueError):
    pass


def script_base(language: str) -> int:
    code = language.split("-")[0].split("_")[0].lower()
    if code not in LANGUAGE_SCRIPT:
        known = ", ".join(sorted(LANGUAGE_SCRIPT))
        raise UnknownLanguageError(f"no Indic script known for language {language!r} (known: {known})")
    return SCRIPT_BASE[LANGUAGE_SCRIPT[code]]


def to_common(text: str, language: str) -> str:
    """Native script -> common (Devanagari-offset) labels."""
    base = script_base(language)
    if base == COMMON_BASE:
        return text
    return "".join(chr(COMMON_BASE + ord(c) - base) if base <= ord(c) < base + BLOCK_SIZE else c for c in text)


def from_common(text: str, language: str) -> str:
    """Common labels -> the language's native script (the inverse of :func:`to_common`)."""
    base = script_base(language)
    if base == COMMON_BASE:
        return text
    return "".join(chr(base + ord(c) - COMMON_BASE)
                   if COMMON_BASE <= ord(c) < COMMON_BASE + BLOCK_SIZE and ord(c) not in SHARED else c
                   for c in text)
