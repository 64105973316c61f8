"""Character vocabulary, greedy CTC, forced-alignment word times, and the output writers."""
import json
import unicodedata

import pytest
import torch

from seqattn.data.text import CharVocabulary, VocabularyError, normalize_text
from seqattn.decode.align import AlignmentError, align_words
from seqattn.decode.ctc import greedy_decode
from seqattn.decode.writers import Transcript, segments, to_ctm, to_json, to_srt, to_vtt


def test_normalization_is_nfc_and_strips_indic_punctuation():
    decomposed = "\u0b95\u0bc6\u0bbe\u0964"  # Tamil KA + E + AA (composes to KA + O) and a danda
    composed = "\u0b95\u0bca"
    assert unicodedata.normalize("NFC", decomposed[:3]) == composed
    assert normalize_text(decomposed) == composed
    assert normalize_text("  Hello,   World! ", lowercase=True) == "hello world"


def test_vocabulary_round_trip_and_missing_characters(tmp_path):
    vocab = CharVocabulary.build(["नमस्ते दुनिया", "தமிழ் மொழி"])
    assert vocab.tokens[:3] == ["<blank>", "<unk>", "|"] and vocab.blank == 0
    ids = vocab.encode("नमस्ते, दुनिया!")
    assert vocab.decode(ids) == "नमस्ते दुनिया"
    assert ids.count(vocab.index["|"]) == 1
    with pytest.raises(VocabularyError, match="U\\+0C95"):  # Kannada KA was never seen
        vocab.encode("ಕ")
    assert vocab.missing("ಕನ್ನಡ") == {"ಕ", "ನ", "್", "ಡ"}
    vocab.save(tmp_path / "tokens.json")
    assert CharVocabulary.load(tmp_path / "tokens.json").tokens == vocab.tokens
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(VocabularyError, match="not valid JSON"):
        CharVocabulary.load(tmp_path / "bad.json")


def test_greedy_collapses_repeats_and_blanks():
    frames = [0, 3, 3, 0, 3, 4, 4, 0, 0, 5]
    logits = torch.nn.functional.one_hot(torch.tensor(frames), 6).float()
    result = greedy_decode(logits)
    assert result.tokens == [3, 3, 4, 5] and result.frames == [1, 4, 5, 9]
    assert greedy_decode(logits, length=4).tokens == [3]


def _peaky_log_probs(path, vocab_size):
    """Log-probs whose best path is exactly ``path`` (one entry per frame)."""
    logits = torch.full((len(path), vocab_size), -8.0)
    logits[torch.arange(len(path)), torch.tensor(path)] = 0.0
    return logits.log_softmax(-1)


def test_forced_alignment_word_times():
    # frames: blank blank a a blank | b b c blank  (a=3, b=4, c=5, |=2), 20 ms frames
    path = [0, 0, 3, 3, 0, 2, 4, 4, 5, 0]
    timings = align_words(_peaky_log_probs(path, 6), [3, 2, 4, 5], ["a", "bc"], boundary=2, frame_seconds=0.02)
    assert [t.word for t in timings] == ["a", "bc"]
    assert timings[0].start == pytest.approx(0.04) and timings[0].end == pytest.approx(0.08)  # end of frame 3
    assert timings[1].start == pytest.approx(0.12) and timings[1].end == pytest.approx(0.18)
    assert all(0.9 < t.confidence <= 1.0 for t in timings)
    with pytest.raises(AlignmentError, match="do not fit"):
        align_words(_peaky_log_probs([0, 3], 6), [3, 3, 3], ["aaa"], boundary=2, frame_seconds=0.02)


def _transcript():
    from seqattn.decode.align import WordTiming

    words = [WordTiming("नमस्ते", 0.10, 0.50, 0.9), WordTiming("दुनिया", 0.60, 1.00, 0.8),
             WordTiming("फिर", 2.50, 2.80, 0.7)]
    return Transcript("utt1", "a.wav", "नमस्ते दुनिया फिर", 3.0, words)


def test_writers_parse_back():
    t = _transcript()
    data = json.loads(to_json(t))
    assert data["text"] == t.text and [w["word"] for w in data["words"]] == ["नमस्ते", "दुनिया", "फिर"]
    assert len(data["segments"]) == 2  # the 1.5 s pause starts a new segment
    ctm = [line.split() for line in to_ctm(t).splitlines()]
    assert ctm[1] == ["utt1", "1", "0.60", "0.40", "दुनिया", "0.800"]
    srt = to_srt(t).split("\n\n")
    assert srt[0].splitlines()[1] == "00:00:00,100 --> 00:00:01,000"
    assert srt[1].splitlines()[2] == "फिर"
    vtt = to_vtt(t)
    assert vtt.startswith("WEBVTT\n\n00:00:00.100 --> 00:00:01.000\nनमस्ते दुनिया\n")
    assert segments(Transcript("u", "a", "", 1.0)) == []
