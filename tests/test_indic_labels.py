"""The common Indic label set: script mapping, vocabulary round trips, and its use in fine-tuning data."""
import unicodedata

import pytest

from seqattn.data.indic import UnknownLanguageError, from_common, to_common
from seqattn.data.text import CharVocabulary, VocabularyError

SAMPLES = {
    "hi": "भारत की राजधानी", "bn": "বাংলা ভাষা", "ta": "தமிழ் நாடு", "te": "తెలుగు భాష", "kn": "ಕನ್ನಡ ನಾಡು",
    "ml": "മലയാളം ഭാഷ", "gu": "ગુજરાતી ભાષા", "pa": "ਪੰਜਾਬੀ ਭਾਸ਼ਾ", "or": "ଓଡ଼ିଆ ଭାଷା", "as": "অসমীয়া ৰাজ্য",
}


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_round_trip_and_letters_land_on_devanagari_counterparts(language):
    text = unicodedata.normalize("NFC", SAMPLES[language])
    common = to_common(text, language)
    assert from_common(common, language) == text
    letters = [c for c in common if c != " "]
    assert all(0x0900 <= ord(c) < 0x0980 for c in letters)
    names = [unicodedata.name(c) for c in text if c != " "]
    mapped = [unicodedata.name(c, "UNASSIGNED") for c in common if c != " "]
    same = sum(n.split(" ", 1)[1] == m.split(" ", 1)[1] for n, m in zip(names, mapped) if m != "UNASSIGNED")
    assert same >= len(names) // 2  # most letters keep their name (KA, VOWEL SIGN AA...) in Devanagari


def test_ka_is_one_label_across_scripts():
    assert {to_common(k, lang) for k, lang in (("क", "hi"), ("ক", "bn"), ("க", "ta"), ("క", "te"), ("ಕ", "kn"))} == {
        "क"
    }
    assert to_common("।", "bn") == "।" and from_common("।", "ta") == "।"  # the danda is shared
    with pytest.raises(UnknownLanguageError, match="xx"):
        to_common("a", "xx")


def test_common_vocabulary_encodes_per_language_and_decodes_to_each_script(tmp_path):
    texts = [SAMPLES["hi"], SAMPLES["bn"], SAMPLES["ta"]]
    vocab = CharVocabulary.build(texts, languages=["hi", "bn", "ta"], common_script=True)
    native = CharVocabulary.build(texts)
    assert len(vocab) < len(native)  # shared labels
    for text, language in zip(texts, ["hi", "bn", "ta"]):
        ids = vocab.encode(text, language=language)
        assert vocab.decode(ids, language) == vocab.normalize(text)
    with pytest.raises(VocabularyError, match="language is needed"):
        vocab.encode(SAMPLES["ta"])
    vocab.save(tmp_path / "tokens.json")
    again = CharVocabulary.load(tmp_path / "tokens.json")
    assert again.common_script and again.tokens == vocab.tokens
    assert again.decode(vocab.encode("கத", language="ta"), "te") == "కత"  # written in another script on request
