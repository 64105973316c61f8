#!/usr/bin/env python
"""Language-model benchmarks: three experiments, each timing its competitors in the same run.

  shakespeare  nanoGPT's CPU experiment (tiny Shakespeare, char-level, 90/10 split, 4 layers, 4 heads,
               128 dims, context 64, batch 12, lr 1e-3 cosine to 1e-4, no dropout) under the same wall-clock
               budget (default 180 s of training per model), for full, local-only, local+routing,
               local+dilated and local+global attention (--variants picks some). Each model's update count is set
               from a short timing run so that its cosine
               schedule ends inside the budget. Val loss: `seqattn eval-lm` over all of the 10% split in
               blocks of 64 (nats per character, as nanoGPT reports). --runs N repeats every model with
               seeds 0..N-1, variants interleaved so that machine noise falls on all of them alike; the
               table gives the median and the range.
  long         training throughput (tokens/s of forward + backward + AdamW) and peak RSS at 4k and 16k tokens
               of context, full attention (SDPA's fused causal kernel) against local + routing heads, same
               model size; each configuration in a fresh process.
  wikitext2    local-only against local+routing at a long context (1024 characters) at equal updates,
               trained on wikitext-2 valid.txt and evaluated on test.txt (`eval-lm`, blocks of 1024);
               --runs N as for shakespeare.

Run:   python tools/bench_lm.py shakespeare long wikitext2 [--runs 3] [--quick] [--out-dir bench_out/lm]
Writes bench_out/lm/results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
from benchlib import PeakRss, median_range, meta, run_worker, write_outputs

CORPORA = REPO.parent / "shared" / "corpora" / "english"
RECIPE = REPO / "recipes" / "lm" / "tinyshakespeare_char.yaml"

# attention variants: model overrides on top of the recipe
SHAKESPEARE_VARIANTS = {
    "full": ["model.attention.local.heads=0", "model.attention.routing.heads=0", "model.routing_layers=0"],
    "local (window 32)": [
        "model.attention.local.heads=4",
        "model.attention.routing.heads=0",
        "model.routing_layers=0",
        "model.attention.local.window_left=32",
    ],
    "local+routing (2+2)": [
        "model.attention.local.heads=2",
        "model.attention.routing.heads=2",
        "model.routing_layers=-1",
        "model.attention.local.window_left=32",
        "model.attention.routing.clusters=4",
        "model.attention.routing.window=32",
    ],
    # one local head replaced by a head that sees the whole context of 64 at about a local head's cost
    "local+dilated (3+1, stride 4)": [
        "model.attention.local.heads=3",
        "model.attention.dilated.heads=1",
        "model.attention.routing.heads=0",
        "model.routing_layers=0",
        "model.attention.local.window_left=32",
        "model.attention.dilated.dilation=4",
        "model.attention.dilated.window=16",
    ],
    "local+global (3+1, 4 tokens)": [
        "model.attention.local.heads=3",
        "model.attention.global_tokens.heads=1",
        "model.attention.routing.heads=0",
        "model.routing_layers=0",
        "model.attention.local.window_left=32",
        "model.attention.global_tokens.window=32",
        "model.attention.global_tokens.tokens=4",
        "model.attention.global_tokens.block=16",
    ],
}
SHAKESPEARE_NAMES = dict(zip(("full", "local", "routing", "dilated", "global"), SHAKESPEARE_VARIANTS))
LONG_VARIANTS = {  # (routing_layers, attention fields)
    "full": (0, dict(local=dict(heads=0), routing=dict(heads=0))),
    "local+routing": (-1, dict(local=dict(heads=4, window_left=256), routing=dict(heads=4, clusters=8, window=256))),
}
WIKITEXT_VARIANTS = {
    "local (window 128)": [
        "model.attention.local.heads=4",
        "model.attention.routing.heads=0",
        "model.routing_layers=0",
    ],
    "local+routing (2+2)": [
        "model.attention.local.heads=2",
        "model.attention.routing.heads=2",
        "model.routing_layers=-1",
    ],
}


def seqattn(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "seqattn.cli.main", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)}
    )


def seconds_per_update(overrides: list[str], workdir: Path, updates: int = 30) -> float:
    """Time ``updates`` updates of a throw-away run (after 5 warm-up updates) from its log."""
    out = workdir / "calibrate"
    result = seqattn(
        "train-lm",
        str(RECIPE),
        *overrides,
        f"run.output_dir={out}",
        f"optim.max_updates={updates + 5}",
        "run.log_every=5",
        "run.save_every=100000",
        "validate_every=0",
        "run.tensorboard=false",
        "data.valid=[]",
    )
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    logged = [json.loads(line) for line in (out / "train.log").read_text().splitlines() if line.startswith("{")]
    tokens_per_s = statistics.median(row["tokens_per_s"] for row in logged[1:])  # skip the warm-up interval
    return 12 * 64 / tokens_per_s


def eval_loss(model_dir: Path, text: Path, context: int) -> dict:
    result = seqattn("eval-lm", str(model_dir), str(text), "--context", str(context), "--json", "--quiet")
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout)["overall"]


def shakespeare(args, workdir: Path) -> list[dict]:
    """One row per (run, variant): ``args.runs`` seeds, the variants interleaved within each run."""
    text = (CORPORA / "tinyshakespeare.txt").read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    train, valid = workdir / "train.txt", workdir / "valid.txt"
    train.write_text(text[:cut], encoding="utf-8")
    valid.write_text(text[cut:], encoding="utf-8")
    data = [f"data.train=[{train}]", f"data.valid=[{valid}]"]
    rows = []
    for seed in range(args.runs):
        for name in (SHAKESPEARE_NAMES[short] for short in args.variants):
            overrides = SHAKESPEARE_VARIANTS[name]
            per_update = seconds_per_update(data + overrides, workdir / f"cal_{len(rows)}")
            # leave 5% of the budget for the one validation pass at the end (data.valid_tokens below)
            updates = max(20, int(0.95 * args.budget / per_update))
            out = workdir / f"run_{len(rows)}"
            started = time.perf_counter()
            result = seqattn(
                "train-lm",
                str(RECIPE),
                *data,
                *overrides,
                f"run.output_dir={out}",
                f"run.seed={seed}",
                f"optim.max_updates={updates}",
                f"run.max_time_s={args.budget}",
                f"validate_every={updates}",
                "data.valid_tokens=8192",
                "run.save_every=100000",
                "run.tensorboard=false",
                "run.log_every=100",
            )
            wall = time.perf_counter() - started
            if result.returncode:
                rows.append({"variant": name, "seed": seed, "error": result.stderr[-500:]})
                continue
            model_dir = Path(result.stdout.strip().splitlines()[-1].split(": ", 1)[1])
            log = [json.loads(line) for line in (out / "train.log").read_text().splitlines() if line.startswith("{")]
            trained = max(row["update"] for row in log)
            score = eval_loss(model_dir, valid, 64)
            rows.append(
                {
                    "variant": name,
                    "seed": seed,
                    "updates": trained,
                    "planned_updates": updates,
                    "seconds_per_update": per_update,
                    "train_wall_s": wall,
                    "val_loss": score["loss"],
                    "val_bits_per_byte": score["bits_per_byte"],
                    "val_tokens": score["tokens"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def long_worker(variant: str, context: int, steps: int, dim: int, layers: int) -> dict:
    import torch

    from seqattn.models.lm import LMConfig, TransformerLM
    from seqattn.models.lm.config import default_attention

    torch.manual_seed(0)
    routing_layers, attention = LONG_VARIANTS[variant]
    config = LMConfig(
        vocab_size=256,
        dim=dim,
        num_layers=layers,
        max_context=context,
        routing_layers=routing_layers,
        attention=default_attention(num_heads=8, **attention),
    )
    model = TransformerLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, 256, (1, context + 1))

    def step():
        nll, loss = model.loss(tokens[:, :-1], tokens[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with PeakRss() as rss:
        step()  # warm-up (allocations, kernels)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "seconds_per_step": median,
        "tokens_per_s": context / median,
        "peak_rss_mib": rss.peak,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def long_context(args) -> list[dict]:
    rows = []
    for context in args.contexts:
        for variant in LONG_VARIANTS:
            worker = [
                "long-worker",
                "--variant",
                variant,
                "--context",
                str(context),
                "--steps",
                str(args.steps),
                "--dim",
                str(args.dim),
                "--layers",
                str(args.layers),
            ]
            rows.append({"variant": variant, "context": context, **run_worker(__file__, worker, args.timeout)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def wikitext2(args, workdir: Path) -> list[dict]:
    """One row per (run, variant), as for shakespeare."""
    train, test = CORPORA / "wikitext-2" / "valid.txt", CORPORA / "wikitext-2" / "test.txt"
    common = [
        f"data.train=[{train}]",
        "data.valid=[]",
        f"data.seq_len={args.wt_context}",
        f"model.max_context={args.wt_context}",
        "model.attention.local.window_left=128",
        "model.attention.routing.window=128",
        "model.attention.routing.clusters=8",
        "data.batch_size=8",
        f"optim.max_updates={args.wt_updates}",
        "optim.warmup_updates=50",
        "validate_every=0",
        "run.save_every=100000",
        "run.tensorboard=false",
        "run.log_every=50",
    ]
    rows = []
    for seed in range(args.runs):
        for name, overrides in WIKITEXT_VARIANTS.items():
            out = workdir / f"wt_{len(rows)}"
            started = time.perf_counter()
            result = seqattn("train-lm", str(RECIPE), *common, *overrides, f"run.output_dir={out}", f"run.seed={seed}")
            wall = time.perf_counter() - started
            if result.returncode:
                rows.append({"variant": name, "seed": seed, "error": result.stderr[-500:]})
                continue
            model_dir = Path(result.stdout.strip().splitlines()[-1].split(": ", 1)[1])
            score = eval_loss(model_dir, test, args.wt_context)
            rows.append(
                {
                    "variant": name,
                    "seed": seed,
                    "updates": args.wt_updates,
                    "context": args.wt_context,
                    "train_wall_s": wall,
                    "test_loss": score["loss"],
                    "test_bits_per_byte": score["bits_per_byte"],
                    "test_word_ppl": score["word_ppl"],
                    "test_tokens": score["tokens"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def medians(rows: list[dict], fields: list[str]) -> list[dict]:
    """Per variant (in first-seen order): the median, minimum and maximum of each field over its runs.

    A variant with a failed run keeps that run's error, so a table never hides a failure behind a median.
    """
    by_variant: dict[str, list[dict]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    summary = []
    for variant, runs in by_variant.items():
        failed = [run for run in runs if "error" in run]
        if failed:
            summary.append({"variant": variant, "error": failed[0]["error"]})
            continue
        entry = {"variant": variant, "runs": len(runs), **{k: runs[0][k] for k in ("context",) if k in runs[0]}}
        for field in fields:
            figure = median_range([run[field] for run in runs])
            entry[field], entry[field + "_min"], entry[field + "_max"] = figure["median"], figure["min"], figure["max"]
        summary.append(entry)
    return summary


def spread(row: dict, field: str, digits: int = 4) -> str:
    """``median (min–max)`` of a field, or just the value for a single run."""
    if row.get("runs", 1) == 1:
        return f"{row[field]:.{digits}f}"
    return f"{row[field]:.{digits}f} ({row[field + '_min']:.{digits}f}–{row[field + '_max']:.{digits}f})"


def table(title: str, header: list[str], rows: list[dict], cells) -> list[str]:
    """A markdown section: one line per row, ``cells(row)`` giving its columns (an error fills the row)."""
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row.get('variant', '')} | error: {row['error'][:80]} |" + " |" * (len(header) - 2))
        else:
            lines.append("| " + " | ".join(cells(row)) + " |")
    return lines + [""]


def markdown(results: dict, info: dict) -> str:
    lines = [
        f"# Language-model benchmarks ({info['machine']}, torch {info['torch']}, {info['date']})",
        "",
        f"`{info['command']}`",
        "",
    ]
    if "shakespeare" in results:
        lines += table(
            "## tiny Shakespeare, char-level, nanoGPT CPU size, equal wall-clock budget "
            "(median over runs, range in brackets)",
            ["attention", "runs", "updates in budget", "s/update", "val loss (nats/char)", "target (<= 1.88)"],
            medians(results["shakespeare"], ["updates", "seconds_per_update", "val_loss"]),
            lambda r: [
                r["variant"],
                str(r["runs"]),
                f"{r['updates']:.0f}",
                spread(r, "seconds_per_update", 3),
                spread(r, "val_loss"),
                "met" if r["val_loss"] <= 1.88 else "not met",
            ],
        )
    if "long" in results:
        full = {r["context"]: r.get("tokens_per_s") for r in results["long"] if r["variant"] == "full"}
        lines += table(
            "## Long-context training throughput (batch 1, forward + backward + AdamW, median of timed steps)",
            ["attention", "context", "tokens/s", "peak RSS (MiB)", "speed-up over full"],
            results["long"],
            lambda r: [
                r["variant"],
                str(r["context"]),
                f"{r['tokens_per_s']:.0f}",
                f"{r['peak_rss_mib']:.0f}",
                f"{r['tokens_per_s'] / full[r['context']]:.2f}x" if full.get(r["context"]) else "—",
            ],
        )
    if "wikitext2" in results:
        lines += table(
            "## wikitext-2 at a long context (train: valid.txt, test: test.txt, equal updates; "
            "median over runs, range in brackets)",
            ["attention", "runs", "context", "updates", "test loss (nats/char)", "bits/byte", "word ppl"],
            medians(results["wikitext2"], ["updates", "test_loss", "test_bits_per_byte", "test_word_ppl"]),
            lambda r: [
                r["variant"],
                str(r["runs"]),
                str(r["context"]),
                f"{r['updates']:.0f}",
                spread(r, "test_loss"),
                spread(r, "test_bits_per_byte"),
                spread(r, "test_word_ppl", 1),
            ],
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "experiments",
        nargs="*",
        default=["shakespeare", "long", "wikitext2"],
        help="shakespeare, long, wikitext2 (or long-worker, internal)",
    )
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run of every experiment")
    parser.add_argument("--budget", type=float, default=180.0, help="shakespeare: training seconds per model")
    parser.add_argument("--contexts", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--steps", type=int, default=3, help="long: timed steps per configuration")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--wt-context", type=int, default=1024)
    parser.add_argument("--wt-updates", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3, help="shakespeare, wikitext2: runs (seeds) per variant")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(SHAKESPEARE_NAMES),
        choices=list(SHAKESPEARE_NAMES),
        help="shakespeare: the attention variants to train",
    )
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out-dir", default="bench_out/lm")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--context", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.experiments == ["long-worker"]:
        print(json.dumps(long_worker(args.variant, args.context, args.steps, args.dim, args.layers)))
        return
    if not (CORPORA / "tinyshakespeare.txt").is_file() and {"shakespeare", "wikitext2"} & set(args.experiments):
        sys.exit(f"the corpora are not at {CORPORA} (../shared is absent)")
    if args.quick:
        args.budget, args.contexts, args.steps, args.dim, args.layers = 12.0, [256, 512], 1, 64, 2
        args.wt_context, args.wt_updates, args.runs = 128, 4, 2
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for experiment in args.experiments:
            if experiment == "shakespeare":
                results["shakespeare"] = shakespeare(args, workdir)
            elif experiment == "long":
                results["long"] = long_context(args)
            elif experiment == "wikitext2":
                results["wikitext2"] = wikitext2(args, workdir)
            else:
                sys.exit(f"unknown experiment {experiment!r}")
    info = meta(sys.argv, os.cpu_count() or 1, args.steps)
    write_outputs(args.out_dir, {"meta": info, **results}, markdown(results, info))


if __name__ == "__main__":
    main()
