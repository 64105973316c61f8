"""Opening a recognizer for transcription: a seqattn CTC model directory in PyTorch, or an exported .onnx
file in onnxruntime, behind one call."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from seqattn.errors import SeqattnError

Backend = Literal["auto", "torch", "onnxruntime"]


class RecognizerError(SeqattnError, ValueError):
    """A model path that the chosen backend cannot run."""


def pick_backend(model_path: str, backend: Backend = "auto") -> str:
    """``auto``: onnxruntime for an ``.onnx`` file, PyTorch for anything else."""
    if backend != "auto":
        return backend
    return "onnxruntime" if str(model_path).endswith(".onnx") else "torch"


def open_recognizer(model_path: str, backend: Backend = "auto", device: str = "auto", threads: int = 0):
    """(model, vocabulary) of a CTC model directory (PyTorch, on ``device``) or an .onnx file written by
    ``seqattn export onnx`` (onnxruntime on the CPU, ``threads`` intra-op threads, 0 = its default)."""
    from seqattn.utils.device import resolve_device

    if pick_backend(model_path, backend) == "onnxruntime":
        from seqattn.interop.onnx import OnnxCTC

        if Path(model_path).is_dir():
            raise RecognizerError(f"--backend onnxruntime runs an exported .onnx file; export this model first: "
                                  f"seqattn export onnx {model_path} model.onnx")
        model = OnnxCTC(model_path, threads=threads)
        return model, model.vocabulary
    from .transcribe import load_recognizer

    return load_recognizer(model_path, resolve_device(device))
