"""Small model directories shared by the tests."""
import torch

from seqattn.data.text import CharVocabulary
from seqattn.models.io import save_model
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, tiny


def ctc_model_dir(path, **config):
    """A tiny CTC model directory (Devanagari vocabulary) whose transcripts are not all empty."""
    vocab = CharVocabulary.build(["नमस्ते दुनिया भारत"])
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny(vocab_size=len(vocab), **config)).eval()
    with torch.no_grad():  # make blank not always win, so transcripts are non-empty
        model.head.bias.copy_(torch.linspace(-1, 1, len(vocab)))
        model.head.bias[0] = -3.0
    save_model(model, path, extra_files={"tokens.json": vocab.to_json()})
    return path
