"""wav2vec 2.0 on seqattn attention: any layer can use full, local, routing or mixed heads."""
from .config import Wav2Vec2Config
from .model import PretrainingOutput, Wav2Vec2ForCTC, Wav2Vec2ForPretraining, Wav2Vec2Model
from .presets import base, large, small, tiny
from .quantizer import GumbelQuantizer, Quantized

__all__ = [
    "GumbelQuantizer",
    "PretrainingOutput",
    "Quantized",
    "Wav2Vec2Config",
    "Wav2Vec2ForCTC",
    "Wav2Vec2ForPretraining",
    "Wav2Vec2Model",
    "base",
    "large",
    "small",
    "tiny",
]
