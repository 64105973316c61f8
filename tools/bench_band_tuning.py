#!/usr/bin/env python
"""The measurements behind the band kernels' tuning constants, on this machine.

Three sweeps, each forward + backward of B=1, H=8, D=64 fp32 at N tokens (default 16384), median of --reps
runs with the compared settings interleaved round by round so that machine noise falls on all alike:

1. ``block``: the blocked kernel's query block size (16, 32, 64) for windows of +-8, +-32, +-64 and +-128;
   what ``seqattn.nn.band_layout.default_block_size`` chooses from.
2. ``native``: the fused CPU kernel against the blocked kernel for windows of +-64 to +-256; where the fused
   kernel stops paying is ``seqattn.nn.native_band.MAX_NATIVE_WINDOW``.
3. ``stream``: the fused kernel with plain against non-temporal (streamed) output stores for +-8 and +-32 at
   N and N / 4; the output size above which stores stream is ``seqattn.nn.native_band.STREAM_MIN_BYTES``.

Run: python tools/bench_band_tuning.py [--lengths 16384] [--reps 5] [--out-dir bench_out/band_tuning]
(--quick: tiny sizes, 2 reps: a smoke run for the tests). Writes results.json and results.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib import meta, write_outputs

from seqattn.nn import native_band
from seqattn.nn.band_layout import default_block_size
from seqattn.nn.local import banded_attention

HEADS, DIM = 8, 64


def _inputs(length: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, HEADS, length, DIM, generator=generator, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, HEADS, length, DIM, generator=generator)
    valid = torch.ones(1, HEADS, length, dtype=torch.bool)
    return q, k, v, grad, valid


def _blocked(window: int, block: int):
    def run(q, k, v, grad, valid):
        out = banded_attention(q, k, v, window, window, valid, scale=DIM**-0.5, block_size=block)
        torch.autograd.backward(out, grad)
    return run


def _fused(window: int, stream_min_bytes: int | None = None):
    def run(q, k, v, grad, valid):
        saved = native_band.STREAM_MIN_BYTES
        if stream_min_bytes is not None:
            native_band.STREAM_MIN_BYTES = stream_min_bytes
        try:
            out = native_band.native_band_attention(q, k, v, window, window, valid, scale=DIM**-0.5)
            torch.autograd.backward(out, grad)
        finally:
            native_band.STREAM_MIN_BYTES = saved
    return run


def interleaved(settings: dict, length: int, reps: int) -> dict[str, float]:
    """Median ms of each setting, the settings run in turn in every round (one warm-up round first)."""
    tensors = _inputs(length)
    times: dict[str, list[float]] = {name: [] for name in settings}
    for round_index in range(reps + 1):
        for name, run in settings.items():
            for t in tensors[:3]:
                t.grad = None
            began = time.perf_counter()
            run(*tensors)
            if round_index:
                times[name].append((time.perf_counter() - began) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def block_sweep(length: int, reps: int, windows=(8, 32, 64, 128), blocks=(16, 32, 64)) -> list[dict]:
    rows = []
    for window in windows:
        medians = interleaved({str(b): _blocked(window, b) for b in blocks}, length, reps)
        rows.append({"window": window, "length": length, "ms": medians,
                     "chosen": default_block_size(window, window, length)})
    return rows


def native_sweep(length: int, reps: int, windows=(64, 128, 192, 256)) -> list[dict]:
    rows = []
    for window in windows:
        block = default_block_size(window, window, length)
        medians = interleaved({"fused": _fused(window), "blocked": _blocked(window, block)}, length, reps)
        rows.append({"window": window, "keys": 2 * window + 1, "length": length, "ms": medians})
    return rows


def stream_sweep(length: int, reps: int, windows=(8, 32)) -> list[dict]:
    rows = []
    for n in (length, max(length // 4, 64)):
        for window in windows:
            medians = interleaved({"plain": _fused(window, 1 << 62), "streamed": _fused(window, 0)}, n, reps)
            rows.append({"window": window, "length": n, "output_mib": HEADS * n * DIM * 4 / 2**20, "ms": medians})
    return rows


def table(payload: dict) -> str:
    info = payload["meta"]
    lines = ["# Band kernel tuning (`tools/bench_band_tuning.py`)", "",
             f"`{info['command']}` on {info['machine']}, torch {info['torch']}, {info['threads']} threads, "
             f"{info['date']}. Forward + backward, B=1, H={HEADS}, D={DIM}, fp32; median ms of {info['reps']} "
             "interleaved rounds.", "", "Blocked kernel, query block size:", "",
             "| window | N | block 16 | block 32 | block 64 | default picks |", "|---|---|---|---|---|---|"]
    for row in payload["block"]:
        ms = row["ms"]
        lines.append(f"| ±{row['window']} | {row['length']} | {ms['16']:.1f} | {ms['32']:.1f} | {ms['64']:.1f} | "
                     f"{row['chosen']} |")
    lines += ["", f"Fused CPU kernel against the blocked kernel (the fused kernel serves windows of up to "
                  f"{native_band.MAX_NATIVE_WINDOW} keys):", "",
              "| window | keys | fused | blocked | fused / blocked |", "|---|---|---|---|---|"]
    for row in payload["native"]:
        ms = row["ms"]
        lines.append(f"| ±{row['window']} | {row['keys']} | {ms['fused']:.1f} | {ms['blocked']:.1f} | "
                     f"{ms['fused'] / ms['blocked']:.2f} |")
    lines += ["", f"Fused kernel, plain against streamed output stores (stores stream from "
                  f"{native_band.STREAM_MIN_BYTES >> 20} MiB per output):", "",
              "| window | N | output MiB | plain | streamed |", "|---|---|---|---|---|"]
    for row in payload["stream"]:
        ms = row["ms"]
        lines.append(f"| ±{row['window']} | {row['length']} | {row['output_mib']:.0f} | {ms['plain']:.1f} | "
                     f"{ms['streamed']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="N=512, 2 reps: a smoke run for the tests")
    parser.add_argument("--out-dir", default="bench_out/band_tuning")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    length, reps = (512, 2) if args.quick else (args.length, args.reps)
    if native_band._library() is None:
        print(f"the fused kernel is unavailable here ({native_band.describe()}): nothing to compare", file=sys.stderr)
        return 1
    payload = {"meta": meta(sys.argv, torch.get_num_threads(), reps),
               "block": block_sweep(length, reps), "native": native_sweep(length, reps),
               "stream": stream_sweep(length, reps)}
    write_outputs(args.out_dir, payload, table(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
