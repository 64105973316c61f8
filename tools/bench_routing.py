#!/usr/bin/env python
"""Does routing earn its place? Local-only, k-means routed (ours and lucidrains' routing-transformer),
block-routed (MoBA-style) and full attention, each trained for the same wall-clock time on tasks where
distance matters, plus the routed kernels' speed and memory at 4k and 16k tokens.

Run:  .venv/bin/python tools/bench_routing.py [--quick] [--parts speed recall code] [--seconds 240] \\
          [--seeds 0 1 2] [--contexts 4096 16384] [--out-dir bench_out/routing]

- ``speed``: forward+backward of each routed kernel alone (tools/bench_attention.py's workers: B=1, H=8, D=64,
  fp32), median of --reps, with the peak RSS above the baseline.
- ``recall``: multi-query associative recall (seqattn.data.longrange): 64 key-value pairs spread over the
  sequence, queried in its last 256 positions, every pair at least two local windows before its query.
  Accuracy on the queried values (chance 1/16).
- ``code``: byte-level language modelling of Python's standard library (seqattn.data.code_corpus), validation
  loss split by where each byte's copy source lies: within the local window, only beyond it, or nowhere.

Every (variant, seed, context) trains in its own fresh process for --seconds of wall-clock (model built,
then the clock starts; evaluation is not counted), so its tokens/s and peak RSS are its own. Models are
2 layers (recall) or 4 layers (code) of width 128 with 4 heads; the local window is 256 tokens and every
routed variant lets a query see about as many keys (k-means: 2 local + 2 routed heads of window 256;
block-routed: 2 local + 2 block heads, blocks of 64, own + top 3). Writes results.json and results.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import PeakRss, current_rss_mib, meta, run_worker, write_outputs

HERE = os.path.dirname(os.path.abspath(__file__))
WINDOW = 256  # local window of every variant
ROUTED_BLOCK, ROUTED_TOP_K = 64, 3
VARIANTS = {
    "local": "local only (4 heads, window 256)",
    "kmeans": "local + k-means routing (2 + 2 heads, routing window 256, N/256 clusters)",
    "lucidrains": "lucidrains routing-transformer (2 local + 2 k-means heads, window 256)",
    "block": f"local + block routing (2 + 2 heads, blocks of {ROUTED_BLOCK}, own + top {ROUTED_TOP_K})",
    "full": "full causal attention (4 heads)",
}
SPEED_METHODS = {  # bench_attention.py method -> row name
    "seqattn_local_causal": "local causal, window 256",
    "seqattn_routing_causal": "k-means routed causal (ours), window 256",
    "lucidrains_routing_causal": "k-means routed causal (lucidrains KmeansAttention)",
    "seqattn_block_routed_causal": f"block-routed causal (ours), blocks of {ROUTED_BLOCK}, own + top {ROUTED_TOP_K}",
    "sdpa_causal": "full causal (SDPA)",
}
TASKS = {
    "recall": dict(layers=2, dim=128, heads=4, batch_tokens=8192, lr=1e-3),
    "code": dict(layers=4, dim=128, heads=4, batch_tokens=16384, lr=2e-3),
}
RECALL = dict(pairs=64, queries=64, num_keys=128, num_values=16, num_filler=64, query_tokens=256)


# ----------------------------------------------------------------------------------------------- worker
def recall_config(context: int):
    from seqattn.data.longrange import RecallConfig

    return RecallConfig(length=context, min_distance=2 * WINDOW, **RECALL)


def build_model(variant: str, task: str, context: int, vocab: int):
    """The variant's model: ``model(tokens) -> (logits, aux_loss)``."""
    settings = TASKS[task]
    if variant == "lucidrains":
        from routing_transformer import RoutingTransformerLM

        model = RoutingTransformerLM(num_tokens=vocab, dim=settings["dim"], depth=settings["layers"],
                                     max_seq_len=context, heads=settings["heads"],
                                     dim_head=settings["dim"] // settings["heads"], window_size=WINDOW,
                                     n_local_attn_heads=settings["heads"] // 2, causal=True)
        return model, lambda tokens: model(tokens)
    from seqattn.models.lm import LMConfig, TransformerLM
    from seqattn.models.lm.config import default_attention

    heads, half = settings["heads"], settings["heads"] // 2
    mixes = {
        "local": dict(local=dict(heads=heads), routing=dict(heads=0)),
        "kmeans": dict(
            local=dict(heads=half), routing=dict(heads=half, clusters=max(1, context // WINDOW), window=WINDOW)
        ),
        "block": dict(
            local=dict(heads=half),
            routing=dict(heads=0),
            block_routed=dict(heads=half, block=ROUTED_BLOCK, top_k=ROUTED_TOP_K),
        ),
        "full": dict(local=dict(heads=0), routing=dict(heads=0)),
    }
    mix = mixes[variant]
    attention = default_attention(num_heads=heads, **mix).replace(local={**mix["local"], "window_left": WINDOW})
    config = LMConfig(
        vocab_size=vocab, dim=settings["dim"], num_layers=settings["layers"], attention=attention, max_context=context
    )
    model = TransformerLM(config)

    def forward(tokens):
        out = model(tokens)
        return out.logits, out.aux_loss

    return model, forward


class RecallData:
    def __init__(self, context: int, seed: int):
        self.config, self.seed = recall_config(context), seed
        self.vocab = self.config.vocab_size

    def batch(self, step: int, size: int):
        from seqattn.data.longrange import recall_batch

        drawn = recall_batch(self.config, size, seed=self.seed * 1_000_003 + step)
        return drawn.tokens, drawn.targets

    def evaluate(self, forward, sequences: int) -> dict:
        from seqattn.data.longrange import recall_batch

        correct = total = 0
        for index in range(sequences):  # fixed evaluation sequences, the same for every variant and seed
            drawn = recall_batch(self.config, 1, seed=10**9 + index)
            logits, _ = forward(drawn.tokens)
            asked = drawn.targets != -100
            correct += int((logits.argmax(-1)[asked] == drawn.targets[asked]).sum())
            total += int(asked.sum())
        return {"accuracy": correct / total, "answers": total, "chance": 1 / self.config.num_values}


class CodeData:
    def __init__(self, context: int, seed: int, data_dir: str):
        import numpy as np

        from seqattn.data.code_corpus import build_code_corpus

        if not os.path.isfile(os.path.join(data_dir, "manifest.json")):
            build_code_corpus(data_dir)
        read = lambda split: np.frombuffer(open(os.path.join(data_dir, f"{split}.txt"), "rb").read(), np.uint8)
        self.train, self.valid = read("train"), read("valid")
        self.context, self.vocab = context, 256
        self.rng = np.random.default_rng(seed)

    def batch(self, step: int, size: int):
        import numpy as np
        import torch

        starts = self.rng.integers(0, len(self.train) - self.context - 1, size=size)
        rows = np.stack([self.train[s : s + self.context + 1] for s in starts]).astype(np.int64)  # (B, N + 1)
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]

    def evaluate(self, forward, eval_bytes: int) -> dict:
        import numpy as np
        import torch
        import torch.nn.functional as F

        from seqattn.data.longrange import CLASS_NAMES, copy_source_classes

        windows = max(1, eval_bytes // self.context)
        sums, counts = np.zeros(3), np.zeros(3)
        for index in range(windows):  # consecutive windows of the validation text
            span = self.valid[index * self.context : (index + 1) * self.context + 1].astype(np.int64)
            classes = copy_source_classes(span, WINDOW)[1:]  # class of each target
            tokens = torch.from_numpy(span)[None]
            logits, _ = forward(tokens[:, :-1])
            nll = F.cross_entropy(logits[0].float(), tokens[0, 1:], reduction="none").numpy()
            for value in range(3):
                sums[value] += nll[classes == value].sum()
                counts[value] += (classes == value).sum()
        result = {f"loss_{name}": sums[i] / max(counts[i], 1) for i, name in enumerate(CLASS_NAMES)}
        result.update({f"bytes_{name}": int(counts[i]) for i, name in enumerate(CLASS_NAMES)})
        result["loss_all"] = sums.sum() / counts.sum()
        return result


def train_worker(
    variant: str, task: str, context: int, seed: int, seconds: float, threads: int, eval_size: int, data_dir: str
) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    settings = TASKS[task]
    data = RecallData(context, seed) if task == "recall" else CodeData(context, seed, data_dir)
    model, forward = build_model(variant, task, context, data.vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], betas=(0.9, 0.98), weight_decay=0.01)
    size = max(1, settings["batch_tokens"] // context)
    warmup = 30
    steps = tokens = 0
    losses, curve, curve_every = [], [], 10
    baseline = current_rss_mib()
    model.train()
    with PeakRss() as rss:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for group in optimizer.param_groups:
                group["lr"] = settings["lr"] * min(1.0, (steps + 1) / warmup)
            inputs, targets = data.batch(steps, size)
            logits, aux = forward(inputs)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            optimizer.zero_grad(set_to_none=True)
            (loss + aux).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            steps += 1
            tokens += inputs.numel()
            losses.append(float(loss.detach()))
            if steps % curve_every == 0:  # the training curve: (seconds, update, mean loss of the last updates)
                curve.append([round(time.perf_counter() - start, 1), steps, statistics.mean(losses[-curve_every:])])
        elapsed = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        scores = data.evaluate(forward, eval_size)
    return {
        "variant": variant,
        "task": task,
        "context": context,
        "seed": seed,
        "steps": steps,
        "train_seconds": elapsed,
        "tokens_per_s": tokens / elapsed,
        "peak_mib": rss.peak - baseline,
        "final_train_loss": statistics.mean(losses[-20:]) if losses else math.nan,
        "curve": curve,
        "parameters": sum(p.numel() for p in model.parameters()),
        **scores,
    }


# ----------------------------------------------------------------------------------------------- parent
def summarize(rows: list[dict], speed: list[dict]) -> dict:
    def median_of(task, context, variant, key):
        values = [
            r[key]
            for r in rows
            if (r.get("task"), r.get("context"), r.get("variant")) == (task, context, variant) and key in r
        ]
        return statistics.median(values) if values else None

    summary = {"recall": {}, "code": {}, "speed": {}}
    for context in sorted({r["context"] for r in rows if "context" in r}):
        accuracy = {v: median_of("recall", context, v, "accuracy") for v in VARIANTS}
        throughput = {v: median_of("recall", context, v, "tokens_per_s") for v in VARIANTS}
        if any(a is not None for a in accuracy.values()):
            summary["recall"][context] = {"accuracy": accuracy, "tokens_per_s": throughput}
        beyond = {v: median_of("code", context, v, "loss_beyond") for v in VARIANTS}
        if any(b is not None for b in beyond.values()):
            local, full = beyond.get("local"), beyond.get("full")
            closed = {}
            for v in ("kmeans", "lucidrains", "block"):
                if None not in (local, full, beyond.get(v)) and local != full:
                    closed[v] = (local - beyond[v]) / (local - full)  # share of the local-to-full gap closed
            summary["code"][context] = {
                "loss_beyond": beyond,
                "gap_closed": closed,
                "loss_all": {v: median_of("code", context, v, "loss_all") for v in VARIANTS},
            }
    by = {(r["method"], r["n"]): r for r in speed}
    for n in sorted({r["n"] for r in speed}):

        def ms(method, n=n):
            times = by.get((method, n), {}).get("forward_backward_s")
            return statistics.median(times) * 1e3 if times else None

        block, kmeans = ms("seqattn_block_routed_causal"), ms("seqattn_routing_causal")
        summary["speed"][n] = {"block_vs_kmeans_fwd_bwd": kmeans / block if block and kmeans else None}
    return summary


def _cell(values: list[float], fmt: str) -> str:
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} [{format(min(values), fmt)}–{format(max(values), fmt)}]"


def markdown(rows, speed, summary, info, args) -> str:
    lines = [
        "# Routing benchmark",
        "",
        f"`{info['command']}` on {info['machine']}, torch {info['torch']}, {info['threads']} threads, "
        f"{info['date']}. Training cells: median [min–max] over seeds {args.seeds}, each run "
        f"{args.seconds:.0f} s of training wall-clock in a fresh process.",
        "",
    ]
    for task, _metric, fmt in (("recall", "accuracy", ".3f"), ("code", "loss_beyond", ".3f")):
        task_rows = [r for r in rows if r.get("task") == task]
        if not task_rows:
            continue
        title = (
            "Associative recall: accuracy on queried values (chance 1/16)"
            if task == "recall"
            else "Code LM: validation loss (nats/byte) by copy source: beyond the window / within / none / all"
        )
        lines += [
            f"## {title}",
            "",
            "| variant | context | "
            + ("accuracy" if task == "recall" else "beyond | within | novel | all")
            + " | tokens/s | peak MiB | steps |",
            "|---|---|" + ("---|" if task == "recall" else "---|---|---|---|") + "---|---|---|",
        ]
        for context in args.contexts:
            for variant, description in VARIANTS.items():
                cell = [r for r in task_rows if r["variant"] == variant and r["context"] == context]
                ok = [r for r in cell if "error" not in r]
                if not cell:
                    continue
                if not ok:
                    lines.append(f"| {description} | {context} | {cell[0]['error']} |")
                    continue
                if task == "recall":
                    scores = [_cell([r["accuracy"] for r in ok], fmt)]
                else:
                    scores = [_cell([r[f"loss_{k}"] for r in ok], fmt) for k in ("beyond", "within", "novel", "all")]
                lines.append(
                    f"| {description} | {context} | " + " | ".join(scores) + " | "
                    f"{_cell([r['tokens_per_s'] for r in ok], '.0f')} | {_cell([r['peak_mib'] for r in ok], '.0f')} | "
                    f"{_cell([r['steps'] for r in ok], '.0f')} |"
                )
        lines.append("")
    if speed:
        lengths = sorted({r["n"] for r in speed})
        lines += [
            "## Kernels alone: forward+backward ms (median), peak MiB",
            "",
            "B=1, H=8, D=64, fp32 (tools/bench_attention.py workers).",
            "",
            "| kernel | " + " | ".join(f"N={n}" for n in lengths) + " |",
            "|---|" + "---|" * len(lengths),
        ]
        by = {(r["method"], r["n"]): r for r in speed}
        for method, description in SPEED_METHODS.items():
            cells = []
            for n in lengths:
                row = by.get((method, n), {})
                if "forward_backward_s" in row:
                    cells.append(
                        f"{statistics.median(row['forward_backward_s']) * 1e3:.0f} ms, {row['peak_mib']:.0f} MiB"
                    )
                else:
                    cells.append(row.get("error", "—"))
            lines.append(f"| {description} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            "Block-routed vs k-means routed (ours), fwd+bwd speed-up: "
            + ", ".join(
                f"N={n}: {s['block_vs_kmeans_fwd_bwd']:.2f}x" if s["block_vs_kmeans_fwd_bwd"] else f"N={n}: n/a"
                for n, s in summary["speed"].items()
            )
            + " (target >= 1.5x at 16k)."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--context", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parts", nargs="+", default=["speed", "recall", "code"], choices=["speed", "recall", "code"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--contexts", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seconds", type=float, default=240.0, help="training wall-clock per run")
    parser.add_argument(
        "--eval-size",
        type=int,
        default=0,
        help="recall: evaluation sequences (default 64); code: validation bytes (default 65536)",
    )
    parser.add_argument("--reps", type=int, default=5, help="speed part: timed repetitions")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data-dir", default="bench_out/routing/code_corpus")
    parser.add_argument("--out-dir", default="bench_out/routing")
    parser.add_argument(
        "--quick", action="store_true", help="tiny contexts, 1 seed, seconds: a smoke run for the tests"
    )
    args = parser.parse_args()

    if args.worker:
        eval_size = args.eval_size or (64 if args.task == "recall" else 65536)
        print(
            json.dumps(
                train_worker(
                    args.worker,
                    args.task,
                    args.context,
                    args.seed,
                    args.seconds,
                    args.threads,
                    eval_size,
                    args.data_dir,
                )
            )
        )
        return
    speed_methods = list(SPEED_METHODS)
    if args.quick:
        args.contexts, args.seeds, args.seconds, args.reps = [1024], [0], 3.0, 2
        args.eval_size = args.eval_size or 2
        speed_methods = ["seqattn_routing_causal", "seqattn_block_routed_causal"]
    from tqdm import tqdm

    speed = []
    if "speed" in args.parts:
        script = os.path.join(HERE, "bench_attention.py")
        for n in tqdm(args.contexts, desc="bench_routing speed", unit="length"):
            for method in speed_methods:
                result = run_worker(
                    script,
                    ["--worker", method, "--n", str(n), "--reps", str(args.reps), "--threads", str(args.threads)],
                    timeout=1800,
                )
                speed.append({"method": method, "n": n, **result})
    rows = []
    jobs = [
        (task, context, seed, variant)
        for task in ("recall", "code")
        if task in args.parts
        for context in args.contexts
        for seed in args.seeds
        for variant in args.variants
    ]
    for task, context, seed, variant in tqdm(jobs, desc="bench_routing training", unit="run"):
        worker_args = [
            "--worker",
            variant,
            "--task",
            task,
            "--context",
            str(context),
            "--seed",
            str(seed),
            "--seconds",
            str(args.seconds),
            "--threads",
            str(args.threads),
            "--data-dir",
            args.data_dir,
        ]
        if args.eval_size:
            worker_args += ["--eval-size", str(args.eval_size)]
        result = run_worker(os.path.abspath(__file__), worker_args, timeout=args.seconds * 4 + 1200)
        rows.append({"variant": variant, "task": task, "context": context, "seed": seed, **result})
        tqdm.write(json.dumps(rows[-1]))
    summary = summarize(rows, speed)
    info = meta(sys.argv, args.threads, args.reps)
    write_outputs(
        args.out_dir,
        {"meta": info, "rows": rows, "speed": speed, "summary": summary},
        markdown(rows, speed, summary, info, args),
    )


if __name__ == "__main__":
    main()
