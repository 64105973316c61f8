"""Fused sliding-window attention for narrow windows on the CPU (a small C library built on first use).

The blocked kernel (:mod:`seqattn.nn.local`) multiplies query blocks against whole key windows with batched
matrix products: fast for wide windows, but for a window of a few dozen keys most of its work is padding
and per-token bookkeeping (zeroing and folding gradient buffers, copies, a softmax over padded rows). The
C loops in ``csrc/band_cpu.c`` visit exactly each query's keys, fused, forward and backward, so a narrow
window costs about its share of a wide one.

The library is compiled with the system C compiler (``$CC``, else ``cc``) into a cache directory
(``$SEQATTN_CACHE_DIR``, else ``$XDG_CACHE_HOME/seqattn`` or ``~/.cache/seqattn``), once per source version and
machine, and loaded with :mod:`ctypes`; it needs no Python or torch headers. ``$SEQATTN_NATIVE_CFLAGS`` adds
compiler flags (``-mno-avx2`` builds the portable loops that CPUs without AVX2 run). Where no compiler works, or with
``SEQATTN_NATIVE=0``, everything runs through the blocked kernel: the results are the same to rounding.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_ABI_VERSION = 3
# Windows (keys per query, L + R + 1) up to this many run here; wider ones through the blocked kernel. The
# limit sits at +-128, where the two kernels are about equal; narrower windows are where the fused one wins and
# wider ones where it loses (tools/bench_band_tuning.py; docs/BENCHMARKS.md, "Band kernel tuning").
MAX_NATIVE_WINDOW = 257
# Outputs at least this large are written with non-temporal stores (they would not stay in the caches anyway);
# smaller ones, such as a speech encoder's 1500-frame heads, stay cached for the operation that reads them next.
# Chosen on a 2-core AMD EPYC VM, where streaming saved 3-15%; on the Intel Xeon VM of docs/BENCHMARKS.md
# ("Band kernel tuning", tools/bench_band_tuning.py) streaming is level, or up to 7% slower at 16k tokens.
STREAM_MIN_BYTES = 8 << 20
_FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-pthread", "-fno-math-errno")


class _BandArgs(ctypes.Structure):
    """Mirror of ``struct band_args`` in csrc/band_cpu.c."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("q", "k", "v", "grad_out", "grad_lse", "out", "lse", "dq",
                                                       "dk", "dv", "probs", "grad_scores", "valid")] + \
               [(name, ctypes.c_int64) for name in ("rows", "length", "dim", "vdim", "left", "right", "stream")] + \
               [(name, ctypes.c_double) for name in ("scale", "self_bias", "neg")]


def _cache_dir() -> Path:
    if os.environ.get("SEQATTN_CACHE_DIR"):
        return Path(os.environ["SEQATTN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "seqattn"


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: a cache shared between machines must not hand one's build to another."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            fields = [line for line in cpuinfo if line.startswith(("flags", "model name", "Features", "CPU part"))]
        return "".join(sorted(set(fields)))
    except OSError:
        return platform.processor()


def _flags() -> tuple[str, ...]:
    """Compiler flags: ours, then ``$SEQATTN_NATIVE_CFLAGS`` (e.g. ``-mno-avx2`` for the portable loops)."""
    return (*_FLAGS, *os.environ.get("SEQATTN_NATIVE_CFLAGS", "").split())


def _build(source_dir: Path, target: Path, compiler: str) -> None:
    """Compile into a temporary file beside ``target`` and rename it into place (atomic: concurrent processes
    building the same library each finish with a complete file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *_flags(), f"-I{source_dir}", str(source_dir / "band_cpu.c"), "-o", tmp, "-lm"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.strip()[-500:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_status = {"text": "not loaded yet"}


def describe() -> str:
    """One line for logs: which kernel CPU windows get, and why (loads the library if needed)."""
    _library()
    return _status["text"]


@functools.lru_cache(maxsize=1)
def _library():
    """The loaded library, or None (disabled, no compiler, or the build failed: logged once)."""
    if os.environ.get("SEQATTN_NATIVE", "1") == "0":
        _status["text"] = "blocked kernel (SEQATTN_NATIVE=0)"
        return None
    source_dir = Path(__file__).with_name("csrc")
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        log.info("no C compiler (%s): narrow local windows use the blocked kernel", compiler)
        _status["text"] = f"blocked kernel (no C compiler {compiler!r} for the fused one)"
        return None
    digest = hashlib.sha256()
    for source in sorted(source_dir.glob("*.[ch]")):  # every source and header: a change to any means a rebuild
        digest.update(source.name.encode() + source.read_bytes())
    digest.update(" ".join((compiler, *_flags(), platform.machine(), _cpu_signature())).encode())
    target = _cache_dir() / f"band_cpu-{digest.hexdigest()[:16]}.so"
    try:
        if not target.exists():
            _build(source_dir, target, compiler)
        library = ctypes.CDLL(str(target))
        if library.band_abi_version() != _ABI_VERSION:
            raise RuntimeError(f"{target} has interface version {library.band_abi_version()}, not {_ABI_VERSION}")
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        log.warning("native band attention unavailable, using the blocked kernel: %s", error)
        _status["text"] = "blocked kernel (the fused one failed to build: see the warning above)"
        return None
    _status["text"] = f"fused CPU kernel up to {MAX_NATIVE_WINDOW} keys ({target})"
    for name in ("band_forward", "band_backward"):
        getattr(library, name).argtypes = [ctypes.POINTER(_BandArgs), ctypes.c_int, ctypes.c_int]
        getattr(library, name).restype = ctypes.c_int
    return library


def usable(q: torch.Tensor, window_left: int, window_right: int) -> bool:
    """Whether this call can run here: CPU, float32 or float64, a narrow window, and the library built."""
    return (q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64)
            and window_left + window_right + 1 <= MAX_NATIVE_WINDOW and _library() is not None)


def _pointer(x: torch.Tensor | None):
    return None if x is None else x.data_ptr()


def _streamed(*outputs: torch.Tensor) -> int:
    """1 when the kernel may write ``outputs`` with non-temporal stores: float32 (the AVX2 loops), rows of whole
    8-float registers starting 32-byte aligned, and every output at least STREAM_MIN_BYTES."""
    return int(all(t.dtype == torch.float32 and t.shape[-1] % 8 == 0 and t.data_ptr() % 32 == 0
                   and t.numel() * t.element_size() >= STREAM_MIN_BYTES for t in outputs))


def _call(name: str, args: _BandArgs, dtype: torch.dtype) -> None:
    status = getattr(_library(), name)(ctypes.byref(args), int(dtype == torch.float64), torch.get_num_threads())
    if status != 0:
        raise MemoryError(f"native band attention ({name}): could not allocate its scratch memory")


class _NativeBand(torch.autograd.Function):
    """Forward returns (out, lse) and keeps the probabilities (B, H, N, L + R + 1) for the backward: for the
    narrow windows this serves, that is as little memory as the blocked kernel keeps."""

    @staticmethod
    def forward(ctx, q, k, v, key_valid, window_left: int, window_right: int, scale: float, self_bias: float):
        batch, heads, length, dim = q.shape
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        valid = key_valid.to(torch.uint8).contiguous()  # (B, H, N)
        out = torch.empty(batch, heads, length, v.shape[-1], dtype=q.dtype)
        lse = torch.empty(batch, heads, length, dtype=q.dtype)  # float32 or float64, as the blocked kernel's
        width = window_left + window_right + 1
        # kept for the backward: each query's probabilities, column c = key i - window_left + c
        probs = torch.empty(batch, heads, length, width, dtype=q.dtype) if any(ctx.needs_input_grad[:3]) else None
        args = _BandArgs(q=_pointer(q), k=_pointer(k), v=_pointer(v), out=_pointer(out), lse=_pointer(lse),
                         probs=_pointer(probs), valid=_pointer(valid), rows=batch * heads, length=length, dim=dim,
                         vdim=v.shape[-1], left=window_left, right=window_right, stream=_streamed(out),
                         scale=scale, self_bias=self_bias, neg=torch.finfo(q.dtype).min / 2)
        _call("band_forward", args, q.dtype)
        # masked keys are zeros in probs: no validity needed; the output is not needed either (see backward)
        ctx.save_for_backward(q, k, v, probs)
        ctx.set_materialize_grads(False)  # an unused lse (the usual case) gets no zero-filled gradient
        ctx.window = (window_left, window_right, scale)  # the backward reads the kept probabilities: no bias
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        q, k, v, probs = ctx.saved_tensors
        window_left, window_right, scale = ctx.window
        batch, heads, length, dim = q.shape
        # the kernel forms dO_i . O_i from the probabilities and its own dO_i . v_j, so O is never read
        grad_out = (torch.zeros(batch, heads, length, v.shape[-1], dtype=q.dtype) if grad_out is None
                    else grad_out.to(q.dtype).contiguous())
        grad_lse = None if grad_lse is None else grad_lse.to(q.dtype).contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        grad_scores = torch.empty_like(probs)  # (B, H, N, L + R + 1) scratch: d loss / d score
        args = _BandArgs(q=_pointer(q), k=_pointer(k), v=_pointer(v), grad_out=_pointer(grad_out),
                         probs=_pointer(probs), grad_scores=_pointer(grad_scores),
                         grad_lse=_pointer(grad_lse), dq=_pointer(dq), dk=_pointer(dk),
                         dv=_pointer(dv), rows=batch * heads, length=length, dim=dim,
                         vdim=v.shape[-1], left=window_left, right=window_right, stream=_streamed(dq, dk, dv),
                         scale=scale)
        _call("band_backward", args, q.dtype)
        return dq, dk, dv, None, None, None, None, None


def native_band_attention(q, k, v, window_left: int, window_right: int, key_valid: torch.Tensor, *, scale: float,
                          self_bias: float = 0.0, return_lse: bool = False):
    """Exact band attention through the C loops (check :func:`usable` first); the same contract as
    :func:`seqattn.nn.local.banded_attention` without segments or weights."""
    out, lse = _NativeBand.apply(q, k, v, key_valid, window_left, window_right, scale, self_bias)
    return (out, lse) if return_lse else out
