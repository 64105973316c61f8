#!/usr/bin/env python
"""Benchmark seqattn's attention kernels against dense SDPA, lucidrains' libraries and FlexAttention.

Run:  .venv/bin/python tools/bench_attention.py [--quick] [--out-dir bench_out/attention]

Setting (issue 2): CPU, fp32, B=1, H=8, D=64, N in {1k..32k}. Every (method, N) runs in its own
subprocess; its peak memory is the maximum RSS, sampled every millisecond, above the RSS just before one
forward+backward (after a warm-up). Times are medians of
--reps runs after one warm-up, forward (no grad) and forward+backward (out.backward(grad) with a fixed random
output gradient, as the next layer hands one back in training; q/k/v gradients unset before each run as
zero_grad leaves them, so none is added into a previous run's). All competitors run in the same
invocation, so the ratios compare like with like. Writes results.json and results.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import matmul_gflops, median_ms, meta, peak_above_baseline, run_worker, timed, write_outputs

B, H, D = 1, 8, 64
LEFT = RIGHT = 128  # bidirectional local window
CAUSAL_LEFT = 256  # causal local window
ROUTING_WINDOW = 256  # tokens per cluster; clusters = N / ROUTING_WINDOW
PER_HEAD = [128, 128, 32, 32, 8, 8, 8, 8]  # +-w of each head in the per-head-window call (a localized layer)
NARROW = {"seqattn_local_w32": 32, "seqattn_local_w8": 8}
# The same windows through the blocked batched-matmul kernel (SEQATTN_NATIVE=0), timed beside the fused one.
BLOCKED = {"seqattn_local_blocked": LEFT, "seqattn_local_w32_blocked": 32, "seqattn_local_w8_blocked": 8}
GLOBAL_TOKENS = 8  # summary tokens of the global heads (learned pooling)
GLOBAL_BLOCK = 64  # causal global heads: summaries of the complete past blocks of this many tokens
ROUTED_BLOCK, ROUTED_TOP_K = 64, 3  # block-routed heads: a query sees (1 + 3) * 64 = 256 keys, as the routing window

METHODS = {
    # name: (description, is_dense)
    "seqattn_local": (f"seqattn local L=R={LEFT}", False),
    "lucidrains_local": ("lucidrains local-attention, window 128, look back/forward 1, exact", False),
    "seqattn_local_w32": ("seqattn local L=R=32", False),
    "seqattn_local_w8": ("seqattn local L=R=8", False),
    "seqattn_local_blocked": (f"seqattn local L=R={LEFT}, blocked kernel (SEQATTN_NATIVE=0)", False),
    "seqattn_local_w32_blocked": ("seqattn local L=R=32, blocked kernel", False),
    "seqattn_local_w8_blocked": ("seqattn local L=R=8, blocked kernel", False),
    "seqattn_local_per_head": (f"seqattn local, per-head windows {'/'.join(map(str, PER_HEAD))} (one call)", False),
    "seqattn_dilated": ("seqattn dilated, stride 4, +-32 strides (reach +-128)", False),
    "seqattn_global": (f"seqattn global: L=R={LEFT} plus {GLOBAL_TOKENS} learned summary tokens", False),
    "seqattn_global_causal": (f"seqattn global causal: L={CAUSAL_LEFT} plus {GLOBAL_TOKENS} summaries of past "
                              f"{GLOBAL_BLOCK}-token blocks", False),
    "seqattn_local_causal": (f"seqattn local causal L={CAUSAL_LEFT}", False),
    "lucidrains_local_causal": ("lucidrains local-attention causal, window 128, look back 2, exact", False),
    "sdpa_dense": ("dense SDPA, no mask", True),
    "sdpa_band_mask": (f"dense SDPA with the L=R={LEFT} band as a bool mask (HF style)", True),
    "flex_sliding": (f"FlexAttention sliding window |i-j|<={LEFT} (compiled)", False),
    "seqattn_routing": (f"seqattn routing, balanced, window {ROUTING_WINDOW}, N/{ROUTING_WINDOW} clusters", False),
    "lucidrains_routing": ("routing-transformer KmeansAttention, same clusters and window", False),
    "seqattn_routing_causal": (f"seqattn routing causal (shared QK), window {ROUTING_WINDOW}", False),
    "lucidrains_routing_causal": ("routing-transformer KmeansAttention causal, shared QK", False),
    "seqattn_block_routed_causal": (f"seqattn block-routed causal (MoBA): blocks of {ROUTED_BLOCK}, own + top "
                                    f"{ROUTED_TOP_K}", False),
    "sdpa_causal": ("dense SDPA, causal (is_causal)", True),
}


# ----------------------------------------------------------------------------------------------- worker
def _build(method: str, n: int):
    """Return (forward(q, k, v) -> out, supports_backward)."""
    import torch
    import torch.nn.functional as F

    if method == "seqattn_local":
        from seqattn.nn import local_attention

        return (lambda q, k, v: local_attention(q, k, v, LEFT, RIGHT)), True
    if method in NARROW or method in BLOCKED:
        if method in BLOCKED:
            os.environ["SEQATTN_NATIVE"] = "0"  # this worker process only: read when the kernel is first used
        from seqattn.nn import local_attention

        width = {**NARROW, **BLOCKED}[method]
        return (lambda q, k, v: local_attention(q, k, v, width, width)), True
    if method == "seqattn_local_per_head":
        from seqattn.nn import local_attention

        return (lambda q, k, v: local_attention(q, k, v, PER_HEAD, PER_HEAD)), True
    if method == "seqattn_dilated":
        from seqattn.nn import dilated_attention

        return (lambda q, k, v: dilated_attention(q, k, v, 32, 32, 4)), True
    if method in ("seqattn_global", "seqattn_global_causal"):
        from seqattn.nn.global_tokens import global_token_attention

        causal = method.endswith("causal")
        queries = torch.randn(H, GLOBAL_TOKENS, D, requires_grad=True)
        left, right = (CAUSAL_LEFT, 0) if causal else (LEFT, RIGHT)
        return (lambda q, k, v: global_token_attention(q, k, v, left, right, tokens=GLOBAL_TOKENS, queries=queries,
                                                       causal=causal, block=GLOBAL_BLOCK)), True
    if method == "seqattn_local_causal":
        from seqattn.nn import local_attention

        return (lambda q, k, v: local_attention(q, k, v, CAUSAL_LEFT, 0)), True
    if method in ("lucidrains_local", "lucidrains_local_causal"):
        from local_attention import LocalAttention

        causal = method.endswith("causal")
        module = LocalAttention(
            window_size=128, causal=causal, look_backward=2 if causal else 1, look_forward=0 if causal else 1,
            exact_windowsize=True, autopad=True,
        )
        return (lambda q, k, v: module(q, k, v)), True
    if method == "seqattn_block_routed_causal":
        from seqattn.nn.block_routing import block_routed_attention

        return (lambda q, k, v: block_routed_attention(q, k, v, ROUTED_BLOCK, ROUTED_TOP_K, causal=True)), True
    if method == "sdpa_causal":
        return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)), True
    if method == "sdpa_dense":
        return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v)), True
    if method == "sdpa_band_mask":
        i = torch.arange(n)
        band = (i[None, :] >= i[:, None] - LEFT) & (i[None, :] <= i[:, None] + RIGHT)
        return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=band)), True
    if method == "flex_sliding":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def band_mod(b, h, q_idx, kv_idx):
            return (q_idx - kv_idx <= LEFT) & (kv_idx - q_idx <= RIGHT)

        block_mask = create_block_mask(band_mod, None, None, n, n, device="cpu")
        compiled = torch.compile(flex_attention)

        def flex(q, k, v):  # on CPU it refuses inputs that require grad, even under no_grad
            if not torch.is_grad_enabled():
                q, k, v = q.detach(), k.detach(), v.detach()
            return compiled(q, k, v, block_mask=block_mask)

        return flex, True
    if method in ("seqattn_routing", "seqattn_routing_causal"):
        from seqattn.nn import RoutingAttention

        causal = method.endswith("causal")
        module = RoutingAttention(H, D, max(1, n // ROUTING_WINDOW), ROUTING_WINDOW, causal=causal, shared_qk=causal)
        return (lambda q, k, v: module(q, k, v).out), True
    if method in ("lucidrains_routing", "lucidrains_routing_causal"):
        from routing_transformer.routing_transformer import KmeansAttention

        causal = method.endswith("causal")
        module = KmeansAttention(max(1, n // ROUTING_WINDOW), ROUTING_WINDOW, H, D, causal=causal, shared_qk=causal)
        return (lambda q, k, v: module(q, k if not causal else q, v)[0]), True
    raise SystemExit(f"unknown method {method}")


def worker(method: str, n: int, reps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, n, D, requires_grad=True) for _ in range(3))
    forward, _ = _build(method, n)
    result = {"method": method, "n": n}

    def fwd():
        with torch.no_grad():
            forward(q, k, v)

    with torch.no_grad():  # the output gradient a training step's next layer would hand back: dense, random
        grad_out = torch.randn(forward(q, k, v).shape)

    def fwd_bwd():
        # a training step's backward: gradients start unset, as after optimizer.zero_grad() (set_to_none, the
        # default), so each repetition writes fresh gradients instead of adding into the previous ones; the
        # output gradient is a given dense tensor, not out.sum()'s (which would add a reduction over the output
        # and the copy of an expanded gradient of ones to every cell)
        q.grad = k.grad = v.grad = None
        forward(q, k, v).backward(grad_out)

    try:  # memory first, in this fresh process: nothing freed yet for the allocator to reuse
        result["peak_mib"] = peak_above_baseline(fwd_bwd)
        result["forward_backward_s"] = timed(fwd_bwd, reps)
    except Exception as error:  # FlexAttention has no CPU backward in this torch (raised through dynamo)
        result["forward_backward_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
        result["peak_mib"] = peak_above_baseline(fwd)
        result["peak_is_forward_only"] = True
    result["forward_s"] = timed(fwd, reps)  # the warm-up compiles FlexAttention
    if method.startswith("seqattn"):
        from seqattn.nn import native_band

        result["cpu_kernel"] = native_band.describe()  # which kernel this worker's local windows ran on
    return result


# ----------------------------------------------------------------------------------------------- parent
def run_one(method: str, n: int, reps: int, threads: int, timeout: float, tuned_malloc: bool) -> dict:
    args = ["--worker", method, "--n", str(n), "--reps", str(reps), "--threads", str(threads)]
    return {"method": method, "n": n, **run_worker(__file__, args, timeout, tuned_malloc)}


def _median_ms(row: dict, key: str):
    return median_ms(row.get(key))


def summarize(rows: list[dict], gflops: float, lengths: list[int]) -> dict:
    by = {(r["method"], r["n"]): r for r in rows}

    def med(method, n, key="forward_backward_s"):
        row = by.get((method, n))
        return _median_ms(row, key) if row else None

    def ratio(a, b):
        return None if a is None or b is None else a / b

    top = 16384 if 16384 in lengths else max(lengths)
    mid = 8192 if 8192 in lengths else lengths[len(lengths) // 2]
    summary = {
        "matmul_gflops": gflops,
        "at_n": top,
        "local_vs_sdpa_dense_fwd_bwd": ratio(med("sdpa_dense", top), med("seqattn_local", top)),
        "local_vs_sdpa_band_fwd_bwd": ratio(med("sdpa_band_mask", top), med("seqattn_local", top)),
        "local_vs_lucidrains_fwd_bwd": ratio(med("lucidrains_local", top), med("seqattn_local", top)),
        "causal_local_vs_lucidrains_fwd_bwd": ratio(
            med("lucidrains_local_causal", top), med("seqattn_local_causal", top)
        ),
        "routing_vs_lucidrains_fwd_bwd_at": mid,
        "routing_vs_lucidrains_fwd_bwd": ratio(med("lucidrains_routing", mid), med("seqattn_routing", mid)),
        "routing_vs_lucidrains_fwd": ratio(
            med("lucidrains_routing", mid, "forward_s"), med("seqattn_routing", mid, "forward_s")
        ),
    }
    summary["narrow_vs_wide_fwd_bwd_at"] = top  # cost of narrower windows as a share of +-128
    summary["narrow_vs_wide_fwd_bwd"] = {
        method: ratio(med(method, top), med("seqattn_local", top))
        for method in (*NARROW, "seqattn_local_per_head", "seqattn_dilated")
    }
    # the fused CPU kernel against the blocked one, per window (> 1: fused faster)
    summary["fused_vs_blocked_fwd_bwd"] = {
        n: {
            LEFT: ratio(med("seqattn_local_blocked", n), med("seqattn_local", n)),
            32: ratio(med("seqattn_local_w32_blocked", n), med("seqattn_local_w32", n)),
            8: ratio(med("seqattn_local_w8_blocked", n), med("seqattn_local_w8", n)),
        }
        for n in lengths
    }
    small, large = (8192, 32768) if {8192, 32768} <= set(lengths) else (lengths[0], lengths[-1])
    summary["global_vs_local_fwd_bwd"] = {  # what the summary tokens add to the same window
        n: {
            "bidirectional": ratio(med("seqattn_global", n), med("seqattn_local", n)),
            "causal": ratio(med("seqattn_global_causal", n), med("seqattn_local_causal", n)),
        }
        for n in lengths
    }
    summary["growth_from"], summary["growth_to"] = small, large
    summary["local_time_growth_fwd_bwd"] = ratio(med("seqattn_local", large), med("seqattn_local", small))
    peaks = {n: by[("seqattn_local", n)].get("peak_mib") for n in lengths if ("seqattn_local", n) in by}
    summary["local_peak_mib"] = peaks
    summary["local_peak_mib_per_1k_tokens"] = {n: p / (n / 1024) for n, p in peaks.items() if p is not None}
    efficiency = {}
    for n in lengths:
        fwd = med("seqattn_local", n, "forward_s")
        if fwd:
            useful = 4 * n * (LEFT + RIGHT + 1) * D * H * B  # band FLOPs, forward
            efficiency[n] = {
                "gflops": useful / (fwd / 1e3) / 1e9,
                "fraction_of_matmul": useful / (fwd / 1e3) / 1e9 / gflops,
            }
    summary["local_forward_efficiency"] = efficiency
    return summary


def markdown(rows, summary, lengths, meta) -> str:
    lines = [
        "# Attention benchmark",
        "",
        f"`{meta['command']}` on {meta['machine']}, torch {meta['torch']}, {meta['threads']} threads, "
        f"{meta['date']}. B={B}, H={H}, D={D}, fp32. Median of {meta['reps']} runs after a warm-up; "
        "forward+backward = `out.backward(grad)` with a fixed random output gradient and q/k/v gradients "
        "unset before each run (as after `zero_grad()`); "
        "peak = max RSS (sampled every ms) during the first fwd+bwd of a fresh process, above the RSS before it. "
        + (
            "glibc default allocator."
            if meta.get("default_malloc")
            else "glibc mmap/trim thresholds raised to 2 GiB in every worker (as `seqattn` commands do), so large "
            "temporaries are reused instead of page-faulted on every call."
        ),
        "",
        f"Matmul reference: {summary['matmul_gflops']:.1f} GFLOP/s (2048^3 fp32 in the same run).",
        "",
        "| method | " + " | ".join(f"N={n}" for n in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]
    by = {(r["method"], r["n"]): r for r in rows}
    for method, (description, _) in METHODS.items():
        cells = []
        for n in lengths:
            row = by.get((method, n))
            if row is None:
                cells.append("—")
            elif "error" in row or "skipped" in row:
                cells.append(row.get("skipped") or row["error"])
            else:
                fwd = _median_ms(row, "forward_s")
                fb = _median_ms(row, "forward_backward_s")
                fb_text = f"{fb:.0f}" if fb is not None else "n/a"
                peak = f"{row['peak_mib']:.0f} MiB" + (" (fwd)" if row.get("peak_is_forward_only") else "")
                cells.append(f"{fwd:.0f} / {fb_text} ms, {peak}")
        lines.append(f"| {description} | " + " | ".join(cells) + " |")
    errors = sorted({r.get("forward_backward_error") for r in rows if r.get("forward_backward_error")})
    lines += ["", "Cells: forward / forward+backward median, peak memory."]
    for error in errors:
        lines.append(f"- forward+backward n/a: {error}")
    s = summary

    def fmt(x, suffix="x"):
        return "n/a" if x is None else f"{x:.2f}{suffix}"

    lines += [
        "",
        "## Targets",
        "",
        f"- local L=R=128 at N={s['at_n']}, fwd+bwd: {fmt(s['local_vs_sdpa_dense_fwd_bwd'])} faster than dense SDPA "
        f"(target >= 15x), {fmt(s['local_vs_sdpa_band_fwd_bwd'])} faster than band-masked SDPA, "
        f"{fmt(s['local_vs_lucidrains_fwd_bwd'])} faster than lucidrains local-attention (target >= 1.5x).",
        f"- causal local L=256 vs lucidrains causal: {fmt(s['causal_local_vs_lucidrains_fwd_bwd'])}.",
        f"- narrow windows at N={s['narrow_vs_wide_fwd_bwd_at']}, fwd+bwd time as a share of L=R=128: "
        + ", ".join(f"{METHODS[m][0]}: {fmt(r)}" for m, r in s["narrow_vs_wide_fwd_bwd"].items())
        + " (targets: +-32 <= 0.35x, +-8 <= 0.15x).",
        "- fused CPU kernel against the blocked kernel, fwd+bwd speed-up per window (+-128 / +-32 / +-8): "
        + ", ".join(
            f"N={n}: " + " / ".join(fmt(r[w]) for w in (LEFT, 32, 8)) for n, r in s["fused_vs_blocked_fwd_bwd"].items()
        )
        + ".",
        "- global heads, fwd+bwd time against the same window without summaries: "
        + ", ".join(
            f"N={n}: {fmt(r['bidirectional'])} (causal {fmt(r['causal'])})"
            for n, r in s["global_vs_local_fwd_bwd"].items()
        )
        + ".",
        f"- time growth N={s['growth_from']} -> N={s['growth_to']} (fwd+bwd): {fmt(s['local_time_growth_fwd_bwd'])} "
        "(target <= 4.5x).",
        "- peak MiB per 1k tokens (linear memory means flat): "
        + ", ".join(f"N={n}: {v:.1f}" for n, v in s["local_peak_mib_per_1k_tokens"].items()),
        f"- routing at N={s['routing_vs_lucidrains_fwd_bwd_at']}: {fmt(s['routing_vs_lucidrains_fwd_bwd'])} faster "
        f"fwd+bwd, {fmt(s['routing_vs_lucidrains_fwd'])} forward, than KmeansAttention (target >= 1.5x).",
        "- local forward efficiency (useful band FLOPs 4*N*(L+R+1)*D*H / time, as a share of matmul GFLOP/s): "
        + ", ".join(
            f"N={n}: {e['gflops']:.0f} GFLOP/s = {100 * e['fraction_of_matmul']:.0f}%"
            for n, e in s["local_forward_efficiency"].items()
        )
        + " (target >= 30%).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 2 reps: a smoke run for the tests")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-dense-n", type=int, default=16384, help="skip dense SDPA above this length")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per (method, N) subprocess")
    parser.add_argument("--out-dir", default="bench_out/attention")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's default mmap threshold (large temporaries are page-faulted on every call)",
    )
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.reps, args.threads)))
        return
    if args.quick:
        args.lengths, args.reps = [512, 1024], 2
        args.methods = [m for m in args.methods if m != "flex_sliding"]  # compiling takes ~30 s
    from tqdm import tqdm

    gflops = matmul_gflops(args.threads)
    rows = []
    jobs = [(m, n) for n in args.lengths for m in args.methods]
    for method, n in tqdm(jobs, desc="bench_attention", unit="run"):
        if METHODS[method][1] and n > args.max_dense_n:
            rows.append({"method": method, "n": n, "skipped": f"skipped (> --max-dense-n {args.max_dense_n})"})
            continue
        rows.append(run_one(method, n, args.reps, args.threads, args.timeout, not args.default_malloc))
    summary = summarize(rows, gflops, args.lengths)
    info = meta(sys.argv, args.threads, args.reps)
    info["default_malloc"] = args.default_malloc
    write_outputs(
        args.out_dir, {"meta": info, "rows": rows, "summary": summary}, markdown(rows, summary, args.lengths, info)
    )


if __name__ == "__main__":
    main()
