"""CTC logits of audio of any length, in one place: one pass, overlapping chunks, or streamed windows.

Training and analysis call the model's components directly; everything that turns utterances, an hour-long
file or a file read from disk piece by piece into logits goes through :class:`LongFormCTC`. The components
keep one ``forward`` each; what makes long inputs fit in memory lives here:

- **One pass** (:meth:`LongFormCTC.logits`): each utterance goes through the CNN on its own (a GroupNorm
  extractor then sees no padding, and a batch gives the frames that single runs give), long ones in chunks of
  ``CNN_CHUNK_FRAMES`` output frames. Inputs longer than two ``SLICE_FRAMES`` run the positional convolution
  and every layer whose heads are all local on overlapping time slices (a slice plus the layer's reach on
  each side gives its central frames exactly); other layers attend over the whole input and run their
  position-wise feed-forward block in slices. An hour then holds a few (T, C) tensors instead of a dozen;
  memory stays linear in the length for layers with routing, pooled or full heads.
- **Chunks** (:meth:`LongFormCTC.chunked_logits`): models with full attention, whose cost is quadratic, run
  on chunks overlapping on each side; each chunk contributes its central frames.
- **Streaming** (:meth:`LongFormCTC.stream_logits`): when every head is local, an output frame depends on a
  bounded stretch of input (the CNN's receptive field, half the positional kernel, each layer's window).
  Windows of ``STREAM_WINDOW_FRAMES`` computed with that much context (the *halo*) on each side give their
  central frames as one pass does, and nothing the size of the input is ever held. Only the first conv
  layer's GroupNorm (the base extractor) looks at the whole input: its statistics come from a first pass.

All of it is inference: no autograd, and neither attention auxiliary losses nor attention weights.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from seqattn.utils.device import module_device

from .components import ConformerLayer, Encoder, EncoderLayer
from .model import Features, FrontEnd, Wav2Vec2ForCTC, Wav2Vec2Model

CNN_CHUNK_FRAMES = 1024  # CNN output frames per chunk of a long utterance (the first layer holds 512 x S/5)
SLICE_FRAMES = 4096  # encoder time slices for inputs longer than two slices
FEED_FORWARD_SLICE = 8192  # (batch x time) frames per feed-forward slice: its (T, 4C) hidden never exists whole
STREAM_WINDOW_FRAMES = 32768  # central frames per streamed window (about 11 minutes at 20 ms); with BASE's
# 12 layers of +-128 frames the halo is 1600 frames each side, so windows recompute about 10% of the frames

Read = Callable[[int, int], torch.Tensor]  # read(start, stop) -> waveform samples [start, stop), shape (stop - start,)


# --- the front end on inputs of any length -------------------------------------------------------------------

@torch.no_grad()
def front_end_frames(extractor: FrontEnd, read: Read, f0: int, f1: int, statistics,
                     frames_per_chunk: int = CNN_CHUNK_FRAMES) -> torch.Tensor:
    """Front-end output frames [f0, f1) -> (1, C, f1 - f0), computed ``frames_per_chunk`` frames at a time.

    Both front ends work without padding, so output frames [a, b) depend only on samples
    [a*hop, (b-1)*hop + field) and each chunk is exact. What looks at the *whole* utterance (the base CNN's
    GroupNorm, the fbank's per-utterance normalisation) takes ``statistics`` from the front end's
    ``whole_input_statistics`` instead.
    """
    field, hop = extractor.receptive_field()
    pieces = []
    for a in range(f0, f1, frames_per_chunk):
        b = min(f1, a + frames_per_chunk)
        samples = read(a * hop, (b - 1) * hop + field)[None, None]  # (1, 1, samples of this chunk)
        pieces.append(extractor.with_statistics(samples, statistics))  # (1, C, b - a)
    return torch.cat(pieces, dim=2)


@torch.no_grad()
def front_end_long(extractor: FrontEnd, waveform: torch.Tensor, frames_per_chunk: int = CNN_CHUNK_FRAMES):
    """One waveform (S,) -> (1, C, T), equal to ``extractor(waveform[None])`` with memory bounded by the chunk
    instead of the input (the CNN's first layer alone holds 512 x S/5 floats: 24 GB for an hour)."""
    total = int(extractor.output_lengths(torch.tensor([waveform.numel()]))[0])
    if total <= 0:
        return extractor(waveform[None])
    read = lambda start, stop: waveform[start:stop]
    samples_per_chunk = frames_per_chunk * extractor.receptive_field()[1]
    statistics = extractor.whole_input_statistics(read, waveform.numel(), samples_per_chunk)
    return front_end_frames(extractor, read, 0, total, statistics, frames_per_chunk)


@torch.no_grad()
def inference_features(backbone: Wav2Vec2Model, waveforms: list[torch.Tensor],
                       frames_per_chunk: int = CNN_CHUNK_FRAMES, keep_raw: bool = False) -> Features:
    """Features of 1-D waveforms of any lengths: each through the front end on its own (long ones in chunks),
    the feature layer norm, then padded into one (B, T, C) batch, on the model's device. ``keep_raw`` also
    keeps what BEST-RQ's quantizer reads (``Features.raw``: the front end's frames before the norm, or the
    conv-subsampled front end's centred log-mel stacks)."""
    device = module_device(backbone)
    rows, raw_rows = [], []
    for wave in waveforms:
        wave = wave.to(device, non_blocking=True)
        if backbone.output_lengths(torch.tensor([wave.numel()]))[0] > frames_per_chunk:
            frames = front_end_long(backbone.feature_extractor, wave, frames_per_chunk)  # (1, C, T_i)
        else:
            frames = backbone.feature_extractor(wave[None])  # (1, C, T_i)
        frames = frames[0].transpose(0, 1)  # (T_i, C)
        rows.append(backbone.feature_norm(frames))
        if keep_raw:  # what BEST-RQ's quantizer reads: the front end says (conv subsampling: log-mel stacks)
            targets = backbone.feature_extractor.targets_of(wave[None], frames.transpose(0, 1)[None])  # (1, C', T_i)
            raw_rows.append(targets[0].transpose(0, 1))  # (T_i, C')
    counts = [row.shape[0] for row in rows]  # host numbers: no read of the device below
    lengths = torch.tensor(counts).to(rows[0].device, non_blocking=True)
    x = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # (B, max T_i, C)
    raw = torch.nn.utils.rnn.pad_sequence(raw_rows, batch_first=True) if keep_raw else None  # (B, max T_i, C)
    padding_mask = None
    if min(counts) < max(counts):
        padding_mask = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]  # (B, T)
    zero = x.new_zeros(())
    return Features(x, zero, zero, padding_mask, lengths, raw, frame_counts=counts)


# --- the encoder on inputs of any length ---------------------------------------------------------------------

def map_time_slices(x: torch.Tensor, fn, halo: int, slice_frames: int, padding_mask=None) -> torch.Tensor:
    """``fn(x, padding_mask)`` for a length-preserving ``fn`` whose output frame t depends only on input frames
    t - halo .. t + halo, computed on slices of ``slice_frames`` frames (plus the halo each side) so that its
    temporaries are bounded by the slice instead of the sequence. x (B, T, C) -> (B, T, C)."""
    length = x.shape[1]
    if length <= slice_frames + 2 * halo:
        return fn(x, padding_mask)
    out = torch.empty_like(x)
    for start in range(0, length, slice_frames):
        stop = min(length, start + slice_frames)
        lo, hi = max(0, start - halo), min(length, stop + halo)
        mask = None if padding_mask is None else padding_mask[:, lo:hi]
        out[:, start:stop] = fn(x[:, lo:hi], mask)[:, start - lo : stop - lo]
    return out


def feed_forward_in_slices(layer: EncoderLayer | ConformerLayer, x: torch.Tensor, padding_mask=None) -> torch.Tensor:
    """The layer's feed-forward half on slices of time (with its reach as halo: 0 for a transformer layer, half
    the convolution for a Conformer block): x (B, T, C) -> (B, T, C)."""
    step = max(1, FEED_FORWARD_SLICE // max(1, x.shape[0]))
    return map_time_slices(x, layer.feed_forward, layer.feed_forward_reach, step, padding_mask)


@torch.no_grad()
def encode(backbone: Wav2Vec2Model, features: Features, slice_frames: int | None = None) -> torch.Tensor:
    """The encoder's final output (B, T, D) for inference, equal to ``backbone.encode(features).x`` up to float
    rounding, with the memory of long inputs bounded as the module docstring describes."""
    slice_frames = slice_frames or SLICE_FRAMES
    encoder: Encoder = backbone.encoder
    x = backbone.dropout_input(backbone.feature_projection(features.x))  # (B, T, D)
    padding_mask = features.padding_mask
    sliced = x.shape[1] > 2 * slice_frames
    positions = None
    if sliced:
        halo = encoder.pos_conv.kernel // 2
        positions = lambda y: map_time_slices(y, lambda part, _: encoder.pos_conv(part), halo, slice_frames)
    x = encoder.embed(x, padding_mask, positions)
    for layer in encoder.layers:
        if sliced and layer.reach is not None:
            x = map_time_slices(x, lambda part, mask, layer=layer: layer(part, mask).x, layer.reach, slice_frames,
                                padding_mask)
        else:
            x = feed_forward_in_slices(layer, layer.attend(x, padding_mask).x, padding_mask)
    return encoder.finish(x)


def encoder_halo(backbone: Wav2Vec2Model) -> int | None:
    """Frames on each side that one encoder output frame depends on, or None when a layer's reach is unbounded."""
    halo = backbone.encoder.pos_conv.kernel // 2
    for layer in backbone.encoder.layers:
        if layer.reach is None:
            return None
        halo += layer.reach
    return halo


@torch.no_grad()
def stream_logits(model: Wav2Vec2ForCTC, read: Read, num_samples: int, *, window_frames: int | None = None,
                  frames_per_chunk: int = CNN_CHUNK_FRAMES) -> Iterator[torch.Tensor]:
    """Yield the logits of consecutive frame ranges, (frames, V) each, covering the whole input in order.

    ``read(start, stop)`` returns the model-ready waveform samples [start, stop) (normalised if the model
    expects it, on the model's device); it is called for overlapping ranges, and in two passes when the
    extractor has a GroupNorm. The concatenated result equals the one-pass logits up to float rounding.
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
    statistics = extractor.whole_input_statistics(read, num_samples, frames_per_chunk * hop) if total > 0 else None
    for first in range(0, total, window_frames):
        last = min(total, first + window_frames)
        lo, hi = max(0, first - halo), min(total, last + halo)
        cnn = front_end_frames(extractor, read, lo, hi, statistics, frames_per_chunk)  # (1, C, hi - lo)
        x = backbone.feature_norm(cnn.transpose(1, 2))  # (1, hi - lo, C)
        zero = x.new_zeros(())
        out = encode(backbone, Features(x, zero, zero, None, None))  # (1, hi - lo, D)
        yield model.head(out[0, first - lo : last - lo])  # (last - first, V)


class CTCInference:
    """What transcription needs from a CTC model, whatever runs it: logits of utterances in one pass, and of
    long inputs in overlapping chunks. :class:`LongFormCTC` runs a seqattn model in PyTorch;
    :class:`seqattn.interop.onnx.OnnxCTC` runs an exported ONNX graph with onnxruntime."""

    min_samples: int  # samples seen by one frame: shorter inputs give no frame
    hop: int  # samples between frames
    normalize: bool  # whether inputs are layer-normalised first (fairseq's ``normalize``)
    device: torch.device
    streamable: bool = False  # True when :meth:`stream_logits` exists and is exact
    has_full_attention: bool = False

    @property
    def default_chunk_seconds(self) -> float:
        """Inputs longer than this run in overlapping chunks unless told otherwise (0: one pass)."""
        return 30.0 if self.has_full_attention else 0.0

    def num_frames(self, num_samples: int) -> int:
        raise NotImplementedError

    def logits(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        """Logits (T_i, V) of each 1-D waveform."""
        raise NotImplementedError

    @torch.no_grad()
    def chunked_logits(self, wave: torch.Tensor, chunk: int, overlap: int) -> torch.Tensor:
        """(T, V) logits of a long waveform from chunks of about ``chunk`` samples overlapping by ``overlap`` on
        each side; each chunk contributes only its central frames, so every frame sees at least ``overlap`` of
        context. Chunks start on the frame grid (multiples of the hop), so chunk frame j is global frame
        ``begin / hop + j`` and the pieces join into exactly the frames of one pass."""
        hop = self.hop
        total_frames = self.num_frames(wave.numel())
        overlap = overlap // hop * hop
        step = max(hop, (chunk - 2 * overlap) // hop * hop)  # samples of central frames per chunk
        pieces, frame = [], 0
        while frame < total_frames:
            start = frame * hop  # first sample of the first frame this chunk contributes
            begin = max(0, start - overlap)
            end = min(wave.numel(), start + step + overlap)
            if end - begin < self.min_samples:  # nothing left that gives a frame
                break
            logits = self.logits([wave[begin:end]])[0]  # (frames, V)
            offset = (start - begin) // hop  # frames of left context to drop
            piece = logits[offset : offset + min(total_frames - frame, step // hop)]
            if piece.shape[0] == 0:
                break
            pieces.append(piece)
            frame += piece.shape[0]
        return torch.cat(pieces)[:total_frames]


class LongFormCTC(CTCInference):
    """The one object through which a seqattn CTC model turns waveforms of any length into logits."""

    def __init__(self, model: Wav2Vec2ForCTC, frames_per_chunk: int = CNN_CHUNK_FRAMES):
        self.model = model
        self.frames_per_chunk = frames_per_chunk
        extractor = model.wav2vec2.feature_extractor
        # samples seen by one frame (shorter inputs give no frame) and samples between frames
        self.min_samples, self.hop = extractor.receptive_field()
        self.normalize = model.config.normalize_waveform
        self.device = module_device(model)

    @property
    def streamable(self) -> bool:
        """True when every head is local, so :meth:`stream_logits` is exact."""
        return encoder_halo(self.model.wav2vec2) is not None

    @property
    def has_full_attention(self) -> bool:
        return self.model.config.has_full_attention

    def num_frames(self, num_samples: int) -> int:
        return int(self.model.wav2vec2.output_lengths(torch.tensor([num_samples]))[0])

    @torch.no_grad()
    def logits(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        """Logits (T_i, V) of each 1-D waveform in one pass; the utterances share one padded encoder batch."""
        features = inference_features(self.model.wav2vec2, waveforms, self.frames_per_chunk)
        logits = self.model.head(encode(self.model.wav2vec2, features))  # (B, T, V)
        return [logits[i, :count] for i, count in enumerate(features.frame_counts)]

    def stream_logits(self, read: Read, num_samples: int, window_frames: int | None = None) -> Iterator[torch.Tensor]:
        """Logits window by window (see :func:`stream_logits`), memory bounded by the window."""
        return stream_logits(self.model, read, num_samples, window_frames=window_frames,
                             frames_per_chunk=self.frames_per_chunk)
