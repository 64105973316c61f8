"""ONNX export of CTC models, and onnxruntime as a transcription backend.

``seqattn export onnx MODEL_DIR OUT.onnx`` captures ``model(waveforms, lengths) -> (logits, frame_lengths)``
with ``torch.export`` (dynamic batch and length) and translates it with PyTorch's ONNX exporter. Both front
ends export: the raw-waveform CNN, and the log-mel filterbank (its FFT becomes ONNX's DFT, its per-utterance
normalisation follows ``lengths``), with transformer or Conformer blocks. Full, local
(per-head windows too), dilated, global, shifted-window and pooled heads export; local heads go through a traceable
form of the same band
(:mod:`seqattn.nn.band_export`), so the exported graph keeps local attention's O(N * window) cost. Routed
heads do not: their k-means assignment sorts tokens by content into data-dependent shapes.

The model directory's ``config.json`` and ``tokens.json`` travel inside the ``.onnx`` file as metadata, so the
file alone is enough to transcribe (``seqattn transcribe OUT.onnx ...``). Every export is checked before it
is kept: onnxruntime and PyTorch must give the same logits within 1e-4 on inputs of several odd lengths.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from seqattn.data.vocabulary import VOCAB_FILE, load_vocabulary, vocabulary_from_json
from seqattn.errors import SeqattnError
from seqattn.models.io import ModelDirError, load_model, parse_config, read_model_config
from seqattn.models.wav2vec2.components import conv_output_frames, receptive_field
from seqattn.models.wav2vec2.longform import CTCInference, LongFormCTC
from seqattn.models.wav2vec2.model import build_front_end
from seqattn.utils.atomic import atomic_path
from seqattn.utils.extras import require

OPSET = 18
METADATA_CONFIG, METADATA_TOKENS = "seqattn.config", "seqattn.tokens"  # config.json and tokens.json texts
CHECK_SECONDS = (0.41, 1.37, 3.03)  # input lengths the export is checked on (odd sample counts)
TOLERANCE = 1e-4  # largest |logit difference| an export may show against PyTorch
LONG_INPUT_CHUNK_SECONDS = 120.0  # inputs longer than this run in overlapping chunks (no streaming in ONNX)


class OnnxError(SeqattnError, ValueError):
    """A model that cannot be exported, an export that does not match PyTorch, or an unusable ONNX file."""


@dataclass
class ExportReport:
    path: Path
    seconds: float  # wall time of the export and its check
    size_bytes: int
    max_difference: float  # max |onnxruntime logit - PyTorch logit| over the checked inputs
    checked_samples: list[int] = field(default_factory=list)  # the checked input lengths


class _LogitsGraph(nn.Module):
    """The exported function: padded waveforms (B, S) and their lengths (B,) -> logits (B, T, V), frames (B,)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor):
        return self.model(waveforms, lengths)


def check_exportable(config, where) -> None:
    """Refuse what the exporter cannot capture, before minutes are spent trying."""
    for index in range(config.num_layers):
        attention = config.attention_for(index)
        if not attention.exportable:
            kinds = ", ".join(s.kind for s in attention.sections() if s.heads and not s.exportable)
            raise OnnxError(
                f"{where}: layer {index} has routed heads ({kinds}), which cannot be exported to ONNX (k-means "
                "and block routing group tokens by content into data-dependent shapes); full, local, "
                "dilated, global, shifted-window and pooled heads can"
            )


def export_onnx(
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    opset: int = OPSET,
    check_seconds: tuple[float, ...] = CHECK_SECONDS,
) -> ExportReport:
    """Export a seqattn CTC model directory to ``out`` (written atomically, only when the check passes)."""
    require("onnx", "onnx", "ONNX export")
    require("onnxscript", "onnx", "ONNX export")
    import onnx

    started = time.perf_counter()
    model_dir = Path(model_dir)
    model = load_model(model_dir)
    if not hasattr(model, "head"):
        raise OnnxError(f"{model_dir} is not a CTC model (model_type must be wav2vec2_ctc); only CTC models export")
    check_exportable(model.config, model_dir)
    vocab_path = model_dir / VOCAB_FILE
    load_vocabulary(vocab_path)  # a readable vocabulary, before it is embedded
    min_samples = LongFormCTC(model).min_samples
    example = torch.randn(2, 16000), torch.tensor([16000, 12345])
    batch = torch.export.Dim("batch", min=1, max=4096)
    samples = torch.export.Dim("samples", min=min_samples, max=2**31 - 1)
    out = Path(out)
    with atomic_path(out) as tmp:
        try:
            torch.onnx.export(
                _LogitsGraph(model).eval(),
                example,
                str(tmp),
                dynamo=True,
                opset_version=opset,
                input_names=["waveforms", "lengths"],
                output_names=["logits", "frame_lengths"],
                dynamic_shapes={"waveforms": {0: batch, 1: samples}, "lengths": {0: batch}},
                verbose=False,
            )
        except Exception as error:  # the exporter raises many types; the message says which part failed
            raise OnnxError(
                f"{model_dir}: the ONNX exporter failed: {type(error).__name__}: {str(error).strip().splitlines()[0]}"
            ) from error
        graph = onnx.load(str(tmp))
        meta = {
            METADATA_CONFIG: json.dumps(read_model_config(model_dir)),
            METADATA_TOKENS: vocab_path.read_text(encoding="utf-8"),
        }
        onnx.helper.set_model_props(graph, meta)
        onnx.save(graph, str(tmp))
        difference, lengths = check_against_torch(model, tmp, check_seconds)
        if difference > TOLERANCE:
            raise OnnxError(
                f"{model_dir}: the exported graph's logits differ from PyTorch's by up to "
                f"{difference:.2e} (tolerance {TOLERANCE:.0e}); not written"
            )
    return ExportReport(out, time.perf_counter() - started, out.stat().st_size, difference, lengths)


@torch.no_grad()
def check_against_torch(model, onnx_path, check_seconds) -> tuple[float, list[int]]:
    """Max |logit difference| between PyTorch and onnxruntime over batched inputs of the given lengths."""
    generator = torch.Generator().manual_seed(0)
    lengths = [int(seconds * 16000) for seconds in check_seconds]
    waves = [torch.randn(n, generator=generator) for n in lengths]
    reference = LongFormCTC(model).logits(waves)
    exported = OnnxCTC(onnx_path).logits(waves)
    difference = max(float((a - b).abs().max()) for a, b in zip(reference, exported))
    return difference, lengths


class OnnxCTC(CTCInference):
    """An exported CTC model run by onnxruntime on the CPU, with the vocabulary and settings it carries."""

    def __init__(self, path: str | os.PathLike, threads: int = 0):
        ort = require("onnxruntime", "onnx", "transcription with --backend onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise OnnxError(f"{path}: no such ONNX file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own error types
            raise OnnxError(f"{path}: onnxruntime cannot load it: {str(error).strip().splitlines()[0]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_CONFIG not in meta or METADATA_TOKENS not in meta:
            raise OnnxError(
                f"{path} was not exported by seqattn (its metadata lacks {METADATA_CONFIG!r} and "
                f"{METADATA_TOKENS!r}); export it with: seqattn export onnx MODEL_DIR {path.name}"
            )
        try:
            saved = json.loads(meta[METADATA_CONFIG])
            self.config = parse_config(saved["model_type"], saved["config"])
        except (json.JSONDecodeError, KeyError, TypeError, ModelDirError) as error:
            raise OnnxError(f"{path}: its embedded seqattn config is unusable: {error}") from None
        self.vocabulary = vocabulary_from_json(meta[METADATA_TOKENS], f"{path} (embedded {VOCAB_FILE})")
        self.path = path
        self.fbank = self.config.frontend == "fbank"
        if self.fbank:  # the graph computes the log-mel frames; their framing gives lengths and receptive field
            self.front_end = build_front_end(self.config)  # (conv subsampling: untrained weights, never run)
            self.min_samples, self.hop = self.front_end.receptive_field()
        else:
            self.convs = [(kernel, stride) for _, kernel, stride in self.config.conv_layers]
            self.min_samples, self.hop = receptive_field(self.convs)
        self.normalize = self.config.normalize_waveform
        self.device = torch.device("cpu")
        self.has_full_attention = self.config.has_full_attention
        # The base extractor's GroupNorm normalises each channel over the whole input, padding included, so
        # padded batches would change the frames: such models run one utterance at a time. The fbank front
        # end normalises each utterance over its own frames only (lengths are inputs of the graph).
        self.batchable = self.fbank or self.config.extractor_mode != "default"

    @property
    def default_chunk_seconds(self) -> float:
        """Full attention: 30 s chunks, as in PyTorch. Bounded heads: 120 s chunks for the raw CNN; none for the
        fbank front end, whose per-utterance normalisation would differ chunk by chunk (PyTorch streams it with
        the whole input's statistics, which a stateless graph cannot), and whose cost is linear in length."""
        if self.has_full_attention:
            return 30.0
        return 0.0 if self.fbank else LONG_INPUT_CHUNK_SECONDS

    def num_frames(self, num_samples: int) -> int:
        if self.fbank:
            return int(self.front_end.output_lengths(torch.tensor([num_samples]))[0])
        return conv_output_frames(self.convs, num_samples)

    def logits(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        groups = [waveforms] if self.batchable else [[wave] for wave in waveforms]
        results = []
        for group in groups:
            lengths = torch.tensor([wave.numel() for wave in group], dtype=torch.int64)
            padded = torch.nn.utils.rnn.pad_sequence([wave.float().cpu() for wave in group], batch_first=True)
            logits, frames = self.session.run(None, {"waveforms": padded.numpy(), "lengths": lengths.numpy()})
            results += [torch.from_numpy(logits[i, : int(frames[i])]) for i in range(len(group))]
        return results
