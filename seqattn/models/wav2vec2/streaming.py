"""CTC logits of an arbitrarily long input in windows, with memory bounded by the window, not the input.

When every encoder layer's heads are local, an output frame depends on a bounded stretch of input: the CNN's
receptive field, the positional convolution's half kernel and each layer's window. A window of frames
computed with that much context (the *halo*) on each side therefore gives its central frames exactly as the
whole-input pass does, and nothing the size of the input is ever held. Only the first conv layer's GroupNorm
(the base model's extractor) looks at the whole input; its statistics come from a first pass over the audio.
Layers with routing, pooled or full heads have no bounded reach, so such models cannot be streamed exactly.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .model import Features, Wav2Vec2ForCTC, Wav2Vec2Model

# Central frames per window: 32768 frames (about 11 minutes at 20 ms). With the base model's 12 layers of
# +-128 frames the halo is 1600 frames each side, so windows recompute about 10% of the frames.
STREAM_WINDOW_FRAMES = 32768


def encoder_halo(model: Wav2Vec2Model) -> int | None:
    """Frames on each side that one encoder output frame depends on, or None when a layer's reach is unbounded."""
    halo = model.encoder.pos_conv.kernel // 2
    for layer in model.encoder.layers:
        reach = layer.attention.config.reach
        if reach is None:
            return None
        halo += max(reach)
    return halo


@torch.no_grad()
def stream_logits(model: Wav2Vec2ForCTC, read: Callable[[int, int], torch.Tensor], num_samples: int, *,
                  window_frames: int | None = None, frames_per_chunk: int = 1024) -> Iterator[torch.Tensor]:
    """Yield the logits of consecutive frame ranges, (frames, V) each, covering the whole input in order.

    ``read(start, stop)`` returns the model-ready waveform samples [start, stop) (normalised if the model
    expects it, on the model's device); it is called for overlapping ranges and in two passes when the
    extractor has a GroupNorm. The concatenated result equals ``model.logits_for([whole waveform])`` up to
    float rounding. ``window_frames`` (central frames per window) defaults to STREAM_WINDOW_FRAMES.
    """
    window_frames = window_frames or STREAM_WINDOW_FRAMES
    backbone = model.wav2vec2
    halo = encoder_halo(backbone)
    if halo is None:
        raise ValueError("this model has attention layers whose reach is unbounded (routing, pooled or full "
                         "heads), so it cannot be streamed; transcribe it in one pass or in overlapping chunks")
    extractor = backbone.feature_extractor
    hop = extractor.receptive_field()[1]
    total = int(backbone.output_lengths(torch.tensor([num_samples]))[0])
    statistics = extractor.first_layer_statistics(read, num_samples, frames_per_chunk * hop) if total > 0 else None
    for first in range(0, total, window_frames):
        last = min(total, first + window_frames)
        lo, hi = max(0, first - halo), min(total, last + halo)
        cnn = extractor.forward_frames(read, lo, hi, statistics, frames_per_chunk)  # (1, C, hi - lo)
        x = backbone.feature_norm(cnn.transpose(1, 2))  # (1, hi - lo, C)
        zero = x.new_zeros(())
        out = backbone.encode(Features(x, zero, zero, None, None), keep_layer_outputs=False)[0]  # (1, hi - lo, D)
        yield model.head(out[0, first - lo : last - lo])  # (last - first, V)
