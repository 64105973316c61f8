"""Argument validation shared by the attention kernels.

Every public kernel checks its inputs up front and raises a ``ValueError`` that names the offending
argument, so a shape or dtype mistake surfaces at the call site instead of deep inside a matmul.
"""
from __future__ import annotations

import torch


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Check that q, k, v are (B, H, N, D) self-attention tensors that agree with each other."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, N, D), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v must match k in (B, H, N), got v {tuple(v.shape)} and k {tuple(k.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError("q, k and v must be on the same device")


def check_window(name: str, value: int) -> int:
    """A window extent must be a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_positive(name: str, value: int) -> int:
    """A size that must be at least one (block size, cluster count, pool size)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_padding_mask(mask: torch.Tensor | None, batch: int, length: int, device: torch.device) -> None:
    """``key_padding_mask`` is (B, N) bool with True marking padding."""
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"key_padding_mask must be a bool tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"key_padding_mask must have dtype torch.bool (True = padding), got {mask.dtype}")
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"key_padding_mask must have shape (B, N) = ({batch}, {length}), got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError("key_padding_mask must be on the same device as q")


def check_head_windows(name: str, value, heads: int) -> list[int]:
    """A window extent for every head: one non-negative int for all of them, or a sequence of ``heads`` ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [check_window(name, value)] * heads
    try:
        values = list(value)
    except TypeError:
        raise ValueError(f"{name} must be a non-negative int or one per head, got {value!r}") from None
    if len(values) != heads:
        raise ValueError(f"{name} must give one window per head ({heads}), got {len(values)}")
    return [check_window(f"{name}[{i}]", v) for i, v in enumerate(values)]
