"""wav2vec 2.0 on seqattn attention: any layer can use full, local, routing or mixed heads; a raw-waveform
CNN or log-mel filterbank front end; transformer or Conformer blocks; contrastive or BEST-RQ pretraining."""
from .bestrq import RandomProjectionQuantizer
from .config import Wav2Vec2Config
from .conv_fbank import ConvFbankFrontEnd
from .fbank import FbankFrontEnd
from .model import (
    BestRQPretraining,
    ContrastivePretraining,
    PretrainingOutput,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPretraining,
    Wav2Vec2Model,
)
from .presets import base, large, small, tiny
from .quantizer import GumbelQuantizer, Quantized

__all__ = [
    "ConvFbankFrontEnd",
    "FbankFrontEnd",
    "GumbelQuantizer",
    "PretrainingOutput",
    "Quantized",
    "RandomProjectionQuantizer",
    "Wav2Vec2Config",
    "Wav2Vec2ForCTC",
    "Wav2Vec2ForPretraining",
    "BestRQPretraining",
    "ContrastivePretraining",
    "Wav2Vec2Model",
    "base",
    "large",
    "small",
    "tiny",
]
