"""Rotary position embedding (RoFormer), applied to queries and keys before any kernel.

Rotary encodes position in the q.k product as a relative rotation, so it composes with every kernel here
(local windows, routing permutations, pooling) without those kernels knowing about positions.
"""
from __future__ import annotations

import torch
from torch import nn


class Rotary(nn.Module):
    """Rotates pairs (x[2i], x[2i+1]) of the head dim by angle ``pos * base**(-2i/D)``.

    The D/2 frequencies are computed on the input's device at each call rather than kept in a buffer: the
    module then holds no state at all, so it builds on the meta device and moves between devices as it is.
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary needs an even head_dim, got {head_dim}")
        self.head_dim, self.base = head_dim, base

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x (B, H, N, D) at positions offset .. offset+N-1 -> rotated x, same shape and dtype."""
        length = x.shape[2]
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # angles at least in fp32
        pos = torch.arange(offset, offset + length, device=x.device, dtype=dtype)
        inv_freq = self.base ** (-torch.arange(0, self.head_dim, 2, device=x.device, dtype=dtype)
                                 / self.head_dim)  # (D/2,)
        angles = pos[:, None] * inv_freq[None, :]  # (N, D/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        pairs = x.unflatten(-1, (-1, 2))  # (B, H, N, D/2, 2)
        even, odd = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)  # (B, H, N, D/2, 2)
        return rotated.flatten(-2)  # (B, H, N, D)
