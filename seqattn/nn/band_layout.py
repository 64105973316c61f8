"""Geometry of the blocked band shared by the banded kernels: query blocks of ``b`` and their key windows of
``W = b + L + R`` keys (:mod:`.local` explains the layout)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlockLayout:
    """Geometry of the blocked band for one (N, L, R) problem."""

    length: int  # N, the real sequence length
    window_left: int  # L, clipped to N - 1
    window_right: int  # R, clipped to N - 1
    block: int  # b, queries per block
    num_blocks: int  # nb = ceil(N / b)

    @property
    def window(self) -> int:
        """Keys in one query block's window: W = b + L + R."""
        return self.block + self.window_left + self.window_right

    @property
    def slots(self) -> int:
        """Key blocks a window overlaps when it starts on a block boundary (the backward folds per slot)."""
        return math.ceil(self.window / self.block)

    @property
    def padded_keys(self) -> int:
        """Length of one key sequence padded by L in front and to whole windows behind: nb * b + L + R."""
        return self.num_blocks * self.block + self.window_left + self.window_right


def default_block_size(window_left: int, window_right: int, length: int) -> int:
    """Pick the query block size b.

    Smaller blocks waste fewer scores at the band's corners (a window has ``b + L + R`` keys for
    ``L + R + 1`` useful ones) but make smaller matmuls: 32 for narrow windows, 64 from +-48 on. Measured by
    ``tools/bench_band_tuning.py`` (docs/BENCHMARKS.md, "Band kernel tuning"): 32 is best for +-8 and +-32,
    64 best or level for +-128; at +-64 32 was 2-5% faster than the 64 chosen here.
    """
    width = window_left + window_right + 1
    block = 64 if width >= 96 else 32
    return max(1, min(block, length))


def make_layout(length: int, window_left: int, window_right: int, block_size: int | None = None) -> BlockLayout:
    """Clip the window to the sequence and choose the blocking."""
    left = min(window_left, max(length - 1, 0))
    right = min(window_right, max(length - 1, 0))
    block = block_size if block_size is not None else default_block_size(left, right, length)
    block = max(1, min(block, length))
    return BlockLayout(length=length, window_left=left, window_right=right, block=block,
                       num_blocks=math.ceil(length / block))


def band_mask(layout: BlockLayout, device: torch.device) -> torch.Tensor:
    """(b, W) bool: query offset r in a block may see window offset c.

    Window offset c is sequence position ``block_start - L + c``; query r is ``block_start + r``.
    The condition ``i - L <= j <= i + R`` becomes ``r <= c <= r + L + R``.
    """
    r = torch.arange(layout.block, device=device)[:, None]
    c = torch.arange(layout.window, device=device)[None, :]
    return (c >= r) & (c <= r + layout.window_left + layout.window_right)
