"""What every wav2vec 2.0 front end gives the backbone, so that the backbone knows no front end by name.

A front end turns waveforms (B, S) into frames (B, C, T). For training it returns :class:`FrontEndFrames`:
the frames the feature norm reads, the frames BEST-RQ's quantizer reads (``targets``), and whether the frames
are learned activations (fairseq's feature penalty applies to those). It also owns its SpecAugment frequency
masking: a front end whose ``masks_before_frames`` is true zeroes the masked log-mel bins inside
``training_frames`` (conv subsampling mixes bins, so the mask must come first); the others zero them in the
normalised features through ``mask_features`` (stacked log-mel frames), or have none (the raw CNN).

The three front ends (``components.FeatureExtractor``, ``fbank.FbankFrontEnd``,
``conv_fbank.ConvFbankFrontEnd``) each implement ``training_frames``, ``targets_of``, ``mask_features`` and
``masks_before_frames``; :func:`~.model.build_front_end` picks one from the config.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FrontEndFrames:
    frames: torch.Tensor  # (B, C, T): what the feature norm reads
    targets: torch.Tensor  # (B, C', T): what BEST-RQ's quantizer reads (the frames themselves unless said)
    learned: bool  # learned activations: the feature penalty applies

