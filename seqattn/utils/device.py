"""One device rule for every command, and the precision settings that depend on it.

``auto`` (the default everywhere) is the GPU when one is visible, else the CPU; ``cpu``, ``cuda`` and ``cuda:N``
ask for one explicitly. Under ``torchrun`` a plain ``cuda`` (or ``auto`` on a GPU machine) means
``cuda:LOCAL_RANK``, one GPU per process. Asking for a GPU where none is visible is a one-line
:class:`DeviceError`, never a traceback.

Precision: ``auto`` is bf16 autocast on a GPU that supports it and fp32 elsewhere; ``bf16`` autocasts on any
device; ``fp16`` autocasts to half precision with a gradient scaler (CUDA's classic mixed precision).
"""
from __future__ import annotations

import re
from contextlib import nullcontext

import torch

from seqattn.errors import SeqattnError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class DeviceError(SeqattnError, ValueError):
    """A device or precision that cannot be had here; the message says what is visible."""


def resolve_device(spec: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """The torch device for ``spec`` (auto | cpu | cuda | cuda:N); ``local_rank`` picks the GPU of a torchrun
    process when ``spec`` names no index."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise DeviceError(f"device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} was asked for, but no CUDA GPU is visible to torch {torch.__version__} "
                          "(torch.cuda.is_available() is False); use --device cpu or auto")
    index = int(match.group(1)) if match.group(1) is not None else (local_rank or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device cuda:{index} was asked for, but only {count} GPU(s) are visible")
    return torch.device("cuda", index)


def resolve_precision(spec: str, device: torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``spec`` on ``device`` (``auto``: bf16 where the GPU supports it)."""
    if spec not in PRECISIONS:
        raise DeviceError(f"precision must be one of {', '.join(PRECISIONS)}, got {spec!r}")
    if spec == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if spec == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"{device} does not support bf16; use precision fp16 (with a gradient scaler) or fp32")
    return spec


def autocast(precision: str, device: torch.device):
    """A context manager for the forward pass: autocast to bf16/fp16 on ``device``, or nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def gradient_scaler(precision: str, device: torch.device):
    """A GradScaler for fp16 (gradients of small losses would underflow in half precision), else None."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def to_device(batch, device: torch.device, non_blocking: bool = True):
    """``batch`` (tensors in dicts, lists and tuples, objects with a ``to_device`` method, anything else as it
    is) with every tensor on ``device``;
    ``non_blocking`` overlaps the copy with compute when the source is in pinned memory."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, dict):
        return {key: to_device(value, device, non_blocking) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device, non_blocking) for value in batch)
    if hasattr(batch, "to_device"):  # an object that moves itself (training draws)
        return batch.to_device(device, non_blocking)
    return batch  # anything else stays where it is (host values that must stay on the host)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (the CPU for a module without parameters)."""
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
