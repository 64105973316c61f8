"""What every wav2vec 2.0 front end gives the backbone, so that the backbone knows no front end by name.

A front end turns waveforms (B, S) into frames (B, C, T). For training it returns :class:`FrontEndFrames`:
the frames the feature norm reads, the frames BEST-RQ's quantizer reads (``targets``), and whether the frames
are learned activations (fairseq's feature penalty applies to those). It also owns its SpecAugment frequency
masking: a front end whose ``masks_before_frames`` is true zeroes the masked log-mel bins inside
``training_frames`` (conv subsampling mixes bins, so the mask must come first); the others zero them in the
normalised features through ``mask_features`` (stacked log-mel frames), or have none (the raw CNN).

The three front ends (``components.FeatureExtractor``, ``fbank.FbankFrontEnd``,
``conv_fbank.ConvFbankFrontEnd``) each implement ``training_frames``, ``targets_of``, ``mask_features`` and
``masks_before_frames``; :func:`build_front_end` picks one from the config.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .components import FeatureExtractor
from .config import Wav2Vec2Config
from .conv_fbank import ConvFbankFrontEnd
from .fbank import FbankFrontEnd

FrontEnd = FeatureExtractor | FbankFrontEnd | ConvFbankFrontEnd  # waveforms (B, S) -> frames (B, C, T)


@dataclass
class FrontEndFrames:
    frames: torch.Tensor  # (B, C, T): what the feature norm reads
    targets: torch.Tensor  # (B, C', T): what BEST-RQ's quantizer reads (the frames themselves unless said)
    learned: bool  # learned activations: the feature penalty applies


def build_front_end(config: Wav2Vec2Config) -> FrontEnd:
    """The config's front end: fairseq's raw-waveform CNN, or the log-mel filterbank with its frames stacked
    (no parameters) or conv-subsampled."""
    if config.frontend == "fbank" and config.fbank_subsampling == "conv":
        return ConvFbankFrontEnd(config.fbank_bins, config.fbank_stack, config.fbank_conv_channels)
    if config.frontend == "fbank":
        return FbankFrontEnd(config.fbank_bins, config.fbank_stack)
    return FeatureExtractor(config.conv_layers, config.extractor_mode, config.conv_bias)
