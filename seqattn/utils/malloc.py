"""glibc allocator tuning for long-running CPU jobs (called by the ``seqattn`` commands, not by the library).

glibc serves allocations above its mmap threshold (dynamic, at most 32 MiB) with fresh mmaps that are
returned to the kernel on free, so each large activation is page-faulted and zeroed again at every call;
on 16k-token attention that costs about 15% of the step. Raising the mmap and trim thresholds makes freed
memory reusable. Environment variables (MALLOC_MMAP_THRESHOLD_) set by the user take precedence.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


@functools.cache
def _libc() -> ctypes.CDLL:  # find_library runs `ldconfig -p`: once per process, not per call
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def tune_glibc_malloc(threshold: int = 2**31 - 1) -> bool:
    """Raise glibc's mmap and trim thresholds; returns whether it applied (Linux/glibc only)."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = _libc()
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def release_free_memory() -> bool:
    """Give glibc's free heap pages back to the kernel (``malloc_trim(0)``); returns whether it ran.

    With the raised trim threshold nothing is returned on its own, so a long batch of differently sized
    inputs slowly fragments the heap (1000 short files to transcribe: +170 MiB); calling this every few
    inputs keeps the resident size flat.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        _libc().malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False
