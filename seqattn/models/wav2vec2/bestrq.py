"""BEST-RQ targets (Chiu et al. 2022): a frozen random-projection quantizer over stacked fbank frames.

Each frame's front-end features are projected by a fixed random matrix (Xavier-normal), L2-normalised, and
matched to the nearest of ``entries`` fixed random unit vectors, in each of ``codebooks`` independent
codebooks. The encoder then predicts those entry indices at masked frames with a softmax per codebook (see
:meth:`seqattn.models.wav2vec2.Wav2Vec2ForPretraining.pretraining_loss`). Nothing here is learned: the
targets cannot collapse, and the quantizer costs one small matmul per frame.

The projection and codebooks are drawn once from ``seed`` and stored in the checkpoint as buffers, so a model
keeps its exact targets whatever the random number generator of a later torch does.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import Quantized, perplexity


class RandomProjectionQuantizer(nn.Module):
    """Frames (B, T, dim) -> nearest codebook entry per codebook, (B, T, codebooks)."""

    def __init__(self, dim: int, codebooks: int, entries: int, code_dim: int, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        # explicit device: built on the CPU even inside a meta-device context (checkpoint loading)
        projection = torch.randn(codebooks, dim, code_dim, generator=generator, device="cpu")
        projection *= (2.0 / (dim + code_dim)) ** 0.5  # Xavier-normal, as in the paper
        codes = F.normalize(torch.randn(codebooks, entries, code_dim, generator=generator, device="cpu"), dim=-1)
        self.register_buffer("projection", projection)  # (G, dim, code_dim)
        self.register_buffer("codes", codes)  # (G, V, code_dim), unit vectors
        self.groups, self.num_vars = codebooks, entries

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None, generators=None,
                reduce: Callable | None = None) -> Quantized:
        """x (B, T, dim) -> :class:`Quantized` whose ``targets`` (B, T, G) are the chosen entries and ``x`` the
        normalised projections (B, T, G * code_dim). ``frame_mask`` (B, T) selects the frames counted in
        ``code_perplexity``; ``reduce`` sums those counts over ranks. ``generators`` is unused (no noise)."""
        batch, length, _ = x.shape
        with torch.no_grad():
            projected = torch.einsum("btd,gde->btge", x.float(), self.projection.float())  # (B, T, G, e)
            projected = F.normalize(projected, dim=-1)
            # nearest unit vector = largest cosine
            targets = torch.einsum("btge,gve->btgv", projected, self.codes.float()).argmax(-1)  # (B, T, G)
            hard = F.one_hot(targets.view(batch * length, self.groups), self.num_vars).float()  # (BT, G, V)
            keep = None if frame_mask is None else frame_mask.reshape(-1)
            used = perplexity(hard, keep, reduce)
        return Quantized(x=projected.view(batch, length, -1), targets=targets, code_perplexity=used,
                         prob_perplexity=used, num_vars=self.groups * self.num_vars)
