"""Beam search through flashlight-text with a KenLM n-gram and a lexicon built by seqattn.train.ngram."""
import pytest
import torch

from seqattn.data.text import CharVocabulary
from seqattn.train.ngram import KenLMError, build_lm, find_kenlm_tool, normalized_corpus, write_lexicon

SENTENCES = ["नमस्ते भारत", "नमस्ते दुनिया", "भारत देश", "दुनिया देश", "नमस्ते देश"] * 4


def _needs_kenlm():
    pytest.importorskip("flashlight.lib.text", reason="flashlight-text is not installed (pip install flashlight-text)")
    try:
        find_kenlm_tool("lmplz")
    except KenLMError as error:
        pytest.skip(str(error))


def _log_probs(vocab, text, noise=None):
    """Peaky frames spelling ``text`` with blanks between characters; ``noise`` swaps one character."""
    frames = []
    for token in vocab.encode(text):
        frames += [token, 0]
    logits = torch.full((len(frames), len(vocab)), -6.0)
    logits[torch.arange(len(frames)), torch.tensor(frames)] = 0.0
    if noise is not None:
        position, wrong = noise
        right = frames[position]
        logits[position, right], logits[position, wrong] = -0.3, 0.0  # the wrong character wins by a little
    return logits.log_softmax(-1)


def test_lexicon_and_lm_beam_search(tmp_path):
    _needs_kenlm()
    from seqattn.decode.transcribe import Beam

    vocab = CharVocabulary.build(SENTENCES)
    sentences = normalized_corpus(SENTENCES + ["English words", "भारत English देश नमस्ते"], vocab)
    assert sentences == SENTENCES + ["भारत", "देश नमस्ते"]  # cut at the word the vocabulary cannot spell
    sentences = sentences[: len(SENTENCES)]
    lm = build_lm(sentences, tmp_path / "lm", order=2)
    lexicon = tmp_path / "lexicon.txt"
    assert write_lexicon(sentences, vocab, lexicon) == 4
    assert "नमस्ते न म स ् त े |" in lexicon.read_text(encoding="utf-8")
    free = Beam(vocab, 8, None, None, 0.0, 0.0)
    assert vocab.decode(free(_log_probs(vocab, "नमस्ते भारत"))) == "नमस्ते भारत"
    # one frame prefers a character that makes a non-word; the lexicon + LM restore the real word
    noisy = _log_probs(vocab, "भारत देश", noise=(0, vocab.index["द"]))
    assert vocab.decode(free(noisy)).split()[0] != "भारत"
    with_lm = Beam(vocab, 16, str(lm), str(lexicon), 1.0, 0.0)
    assert vocab.decode(with_lm(noisy)) == "भारत देश"
