#!/usr/bin/env python
"""Attention kernels on a GPU: forward + backward of seqattn's local and routed heads against dense SDPA
(flash where the GPU has it) and FlexAttention's sliding-window block mask, timed in the same run.

Run:  python tools/bench_gpu.py [--device cuda] [--quick] [--out-dir bench_out/gpu]
      (tools/gpu_check.sh runs it after the CUDA tests; --quick --device cpu is the CI smoke run)

Local heads: 16 heads x dim 64, windows +-128 and +-512, 8k, 32k and 128k tokens, bf16 on GPUs (fp32 on the
CPU). Routed heads: the same shapes, clusters of 256 tokens. Each cell is the median of --reps timed calls
after a warm-up (CUDA timings synchronise); dense attention is skipped above --max-dense-n. The table gives the
targets: local at least as fast as FlexAttention's sliding window everywhere, >= 8x dense SDPA at 32k for
+-128, and 32k -> 128k growth <= 4.4x.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
from benchlib import meta, write_outputs

HEADS, DIM = 16, 64


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(fn, q, k, v, reps: int) -> list[float]:
    """Seconds per forward + backward of ``fn(q, k, v)`` (a warm-up call first, compilation included there)."""
    def step():
        for t in (q, k, v):
            t.grad = None
        fn(q, k, v).float().sum().backward()

    step()
    _sync(q.device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        _sync(q.device)
        times.append(time.perf_counter() - start)
    return times


def methods(n: int, window: int, device: torch.device, causal: bool):
    """name -> callable(q, k, v) for one sequence length and window."""
    from seqattn.nn import RoutingAttention, local_attention

    right = 0 if causal else window
    result = {
        f"seqattn local +-{window}": lambda q, k, v: local_attention(q, k, v, window_left=window, window_right=right),
        "dense SDPA": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
    }
    routing = RoutingAttention(HEADS, DIM, max(1, n // 256), 256, causal=causal).to(device)

    def routed(q, k, v):  # fp32 centroids meet bf16 queries under autocast, as inside a model
        with torch.autocast(device.type, dtype=q.dtype, enabled=q.dtype != torch.float32):
            return routing(q, k, v).out

    result["seqattn routed (clusters of 256)"] = routed

    def chunked(q, k, v):  # the CPU's chunked kernel on the GPU, for comparison with the flex default
        from seqattn.nn.backend import use_backend

        with use_backend("chunked"):
            return local_attention(q, k, v, window_left=window, window_right=right)

    result[f"seqattn local +-{window}, chunked backend"] = chunked
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def band(b, h, q_idx, kv_idx):
            return (q_idx - kv_idx <= window) & (kv_idx - q_idx <= right)

        try:  # built by a compiled kernel: the eager builder would evaluate all N x N positions
            mask = create_block_mask(band, None, None, n, n, device=str(device), _compile=True)
        except TypeError:  # pragma: no cover - a torch without _compile
            mask = create_block_mask(band, None, None, n, n, device=str(device))
        compiled = torch.compile(flex_attention) if device.type == "cuda" else flex_attention
        result[f"FlexAttention sliding +-{window}"] = lambda q, k, v: compiled(q, k, v, block_mask=mask)
    except Exception as error:  # broad on purpose: an older torch, or no compiler: reported in the table
        result[f"FlexAttention sliding +-{window}"] = error
    return result


def run(args, info: dict) -> dict:
    """Time every cell, writing results.json and results.md again after each row, so that a run cut short by
    its time limit leaves every row it finished."""
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = []
    result = {"device": str(device), "dtype": str(dtype).replace("torch.", ""),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "rows": rows}
    for window in args.windows:
        for n in args.lengths:
            generator = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(1, HEADS, n, DIM, generator=generator).to(device, dtype).requires_grad_()
                       for _ in range(3))
            for name, fn in methods(n, window, device, args.causal).items():
                row = {"method": name, "window": window, "n": n}
                if isinstance(fn, Exception):
                    row["error"] = f"{type(fn).__name__}: {fn}"[:200]
                elif (name == "dense SDPA" or "chunked" in name) and n > args.max_dense_n:
                    row["skipped"] = f"n > --max-dense-n {args.max_dense_n}"
                elif name.startswith("FlexAttention") and device.type != "cuda":
                    row["skipped"] = "FlexAttention's backward needs a GPU"
                else:
                    try:
                        row["seconds"] = time_fwd_bwd(fn, q, k, v, args.reps)
                    except Exception as error:  # broad on purpose: out of memory, unsupported dtype: reported
                        row["error"] = f"{type(error).__name__}: {error}"[:200]
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                rows.append(row)
                print(row if "seconds" not in row else {**row, "seconds": statistics.median(row["seconds"])},
                      flush=True)
                write_outputs(args.out_dir, {"meta": info, **result}, markdown(result, info))
    return result


def markdown(result: dict, info: dict) -> str:
    lines = [f"# Attention kernels, forward + backward ({result['gpu'] or result['device']}, {result['dtype']}, "
             f"torch {info['torch']}, {info['date']})", "", f"`{info['command']}`", "",
             "| method | window | N | ms, median | vs seqattn local |", "|---|---|---|---|---|"]
    local = {(r["window"], r["n"]): statistics.median(r["seconds"]) for r in result["rows"]
             if r["method"] == f"seqattn local +-{r['window']}" and "seconds" in r}
    for row in result["rows"]:
        if "seconds" in row:
            ms = statistics.median(row["seconds"]) * 1e3
            ratio = ms / 1e3 / local[(row["window"], row["n"])] if (row["window"], row["n"]) in local else None
            cells = f"{ms:.2f} | {'-' if ratio is None else f'{ratio:.2f}x'}"
        else:
            cells = f"{row.get('skipped') or row.get('error')} | -"
        lines.append(f"| {row['method']} | +-{row['window']} | {row['n']} | {cells} |")
    lengths = sorted({n for _, n in local})
    lines += ["", "Growth of seqattn local, longest / second longest length (linear would be their ratio): "
              + ", ".join(f"+-{w}: {local[(w, lengths[-1])] / local[(w, lengths[-2])]:.2f}x"
                          for w in sorted({w for w, _ in local}) if len(lengths) > 1
                          and (w, lengths[-1]) in local and (w, lengths[-2]) in local), ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--windows", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-dense-n", type=int, default=32768)
    parser.add_argument("--quick", action="store_true", help="1k and 2k tokens, window 32, 2 reps (a smoke run)")
    parser.add_argument("--out-dir", default="bench_out/gpu")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.windows, args.reps = [1024, 2048], [32], 2
    info = meta(sys.argv, torch.get_num_threads(), args.reps)
    result = run(args, info)
    write_outputs(args.out_dir, {"meta": info, **result}, markdown(result, info))


if __name__ == "__main__":
    main()
