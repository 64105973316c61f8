"""Sentencepiece output units: learnt from the training words, joined by | like characters, saved in tokens.json."""
import pytest
from audio_fixtures import make_data_dir

from seqattn import load_model
from seqattn.cli.main import main as cli_main
from seqattn.data.pieces import PieceVocabulary
from seqattn.data.text import VocabularyError
from seqattn.data.vocabulary import load_vocabulary
from seqattn.train.ngram import write_lexicon

TEXTS = ["नमस्ते दुनिया", "भारत देश महान", "हिंदी भाषा सुंदर", "नमस्ते भारत देश", "दुनिया भाषा"] * 20


def test_pieces_round_trip_save_load_and_lexicon(tmp_path):
    vocab = PieceVocabulary.build(TEXTS, size=40)
    assert vocab.tokens[:3] == ["<blank>", "<unk>", "|"] and len(vocab) > 3
    assert any(len(token) > 1 for token in vocab.tokens[3:])  # real multi-character pieces were learnt
    ids = vocab.encode("नमस्ते भारत")
    assert ids.count(vocab.index["|"]) == 1 and vocab.decode(ids) == "नमस्ते भारत"
    pieces = [piece for word in "हिंदी भाषा नमस्ते".split() for piece in vocab.spelling(word)]
    assert len(pieces) < len("हिंदीभाषानमस्ते")  # some word is one learnt multi-character piece
    assert vocab.decode(vocab.encode("भाषा नमस्ते दुनिया")) == "भाषा नमस्ते दुनिया"  # unseen order, known pieces
    with pytest.raises(VocabularyError, match="U\\+0915"):
        vocab.encode("क")  # KA never occurs in the training words
    vocab.save(tmp_path / "tokens.json")
    again = load_vocabulary(tmp_path / "tokens.json")
    assert isinstance(again, PieceVocabulary) and again.tokens == vocab.tokens
    assert again.encode("नमस्ते भारत") == ids
    write_lexicon(["नमस्ते भारत"], again, tmp_path / "lexicon.txt")
    lines = (tmp_path / "lexicon.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].split()[0] == "नमस्ते" and lines[0].split()[1:-1] == again.spelling("नमस्ते")
    assert all(line.endswith(" |") for line in lines)


def test_zero_width_joiners_stay_inside_the_pieces():
    """Bengali and other Indic spellings carry ZWNJ/ZWJ (U+200C/U+200D) inside words; the pieces keep them, so
    such a word encodes without unknown characters and decodes back to itself."""
    texts = ["ক্\u200cষমা বাংলা", "অক্ষর বাংলা ভাষা", "র\u200dযাব ভাষা"] * 20
    vocab = PieceVocabulary.build(texts, size=30)
    for text in ("ক্\u200cষমা ভাষা", "র\u200dযাব বাংলা"):
        assert vocab.unknown_characters(text) == set()
        assert vocab.decode(vocab.encode(text)) == text


def test_finetune_with_sentencepiece_units_then_transcribe(tmp_path, capsys):
    from test_finetune import RECIPE

    from seqattn.train.config_io import load_config
    from seqattn.train.finetune import FinetuneConfig, train

    train_dir = make_data_dir(tmp_path, "train", 8, "hi", seconds=(1.0, 1.4), texts=TEXTS[:5])
    config = load_config(FinetuneConfig, str(RECIPE), [
        f"data.train=[{{path: {train_dir}}}]", f"run.output_dir={tmp_path / 'ft'}", "optim.max_updates=2",
        "run.save_every=2", "validate_every=0", "run.tensorboard=false", "data.units=sentencepiece",
        "data.sentencepiece_size=30", "data.max_tokens=48000", "freeze_cnn=false",
        "model={conv_layers: [[32, 10, 5], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 3, 2], [32, 2, 2], [32, 2, 2]], "
        "embed_dim: 32, ffn_dim: 64, num_layers: 1, attention: {num_heads: 2}, conv_pos: 8, conv_pos_groups: 2}"])
    best = train(config)
    vocab = load_vocabulary(best / "tokens.json")
    assert isinstance(vocab, PieceVocabulary) and load_model(best).config.vocab_size == len(vocab)
    assert cli_main(["transcribe", str(best), "--data-dir", str(train_dir), "--output-dir", str(tmp_path / "out"),
                     "--quiet"]) == 0
    assert "%CER" in capsys.readouterr().out
