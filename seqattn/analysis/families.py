"""Language families of the languages seqattn's Indic recipes meet (ISO 639 codes, as in utt2lang).

A small, explicit table for the language-family probe; extend it (or pass ``--family LANG=FAMILY``) for
other languages. Sources: the languages' standard classifications (Indo-Aryan branch of Indo-European,
Dravidian, Tibeto-Burman branch of Sino-Tibetan, Austroasiatic).
"""
from __future__ import annotations

LANGUAGE_FAMILY = {
    # Indo-Aryan
    "as": "Indo-Aryan", "bn": "Indo-Aryan", "bpy": "Indo-Aryan", "gu": "Indo-Aryan", "hi": "Indo-Aryan",
    "kok": "Indo-Aryan", "mai": "Indo-Aryan", "mr": "Indo-Aryan", "ne": "Indo-Aryan", "or": "Indo-Aryan",
    "pa": "Indo-Aryan", "sa": "Indo-Aryan", "sd": "Indo-Aryan", "si": "Indo-Aryan", "ur": "Indo-Aryan",
    "doi": "Indo-Aryan", "ks": "Indo-Aryan", "bho": "Indo-Aryan",
    # Dravidian
    "kn": "Dravidian", "ml": "Dravidian", "ta": "Dravidian", "te": "Dravidian", "tcy": "Dravidian",
    # Tibeto-Burman
    "brx": "Tibeto-Burman", "mni": "Tibeto-Burman",
    # Austroasiatic
    "sat": "Austroasiatic",
}


def family_of(language: str, overrides: dict[str, str] | None = None) -> str | None:
    """Family name, or None when the table does not know the language. Region subtags are ignored
    (``hi-IN`` -> ``hi``)."""
    overrides = overrides or {}
    if language in overrides:
        return overrides[language]
    base = language.replace("_", "-").split("-")[0].lower()
    return overrides.get(base, LANGUAGE_FAMILY.get(base))
