"""Which implementation runs the sparse heads' attention: chosen by device, forcible for debugging.

- ``flex``: PyTorch's FlexAttention with a block mask built from the head's pattern (:mod:`.flex`), compiled
  into one fused kernel on GPUs (forward and backward, fp32 softmax accumulation for bf16 inputs), with no
  host read of any device value. The default on every device but the CPU.
- ``chunked``: the banded kernel of :mod:`.local` (cache-sized chunks of query blocks, with the fused C
  kernel of :mod:`.native_band` where it applies). The default on the CPU, and the reference the flex path
  is tested against.

``SEQATTN_ATTENTION_BACKEND=flex|chunked|auto`` in the environment, or ``with use_backend("flex"):``,
forces one. Flex on the CPU runs PyTorch's unfused reference implementation (it materialises the scores, and
PyTorch has no CPU backward for it): useful to check the masks, not to train.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar

import torch

BACKENDS = ("auto", "flex", "chunked")
_forced: ContextVar[str | None] = ContextVar("seqattn_attention_backend", default=None)


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"attention backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return name


def attention_backend(device: torch.device) -> str:
    """``flex`` or ``chunked`` for tensors on ``device``: the forced choice, else flex off the CPU."""
    name = _forced.get() or _check(os.environ.get("SEQATTN_ATTENTION_BACKEND", "auto").strip().lower() or "auto")
    if name == "auto":
        return "chunked" if device.type == "cpu" else "flex"
    return name


@contextmanager
def use_backend(name: str):
    """Force ``name`` (auto | flex | chunked) for the attention calls inside the block."""
    token = _forced.set(_check(name))
    try:
        yield
    finally:
        _forced.reset(token)
