#!/usr/bin/env python
"""What a filterbank front end costs per CTC fine-tuning step: frames stacked against conv-subsampled.

Run:  .venv/bin/python tools/bench_front_ends.py [--quick] [--out-dir bench_out/front_ends]

The model is the demo's (``recipes/wav2vec2/finetune_fbank_conformer_cpu.yaml``: 6 Conformer blocks of 192
dims with local heads, 40 ms frames) with each front end in turn: 4 log-mel frames stacked, or two 3x3
stride-2 convolutions of 32, 64 or 128 channels. One step is ``training_forward`` on a padded batch like the
demo's (6 utterances of 1.25-1.67 s, span masking on) and a backward through a loss on every logit. The
models live in one process and run in alternating rounds, so a change in the machine's speed hits them all
alike; the table gives the median per front end and its ratio to stacking.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import TUNED_MALLOC, meta, write_outputs

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "wav2vec2" / "finetune_fbank_conformer_cpu.yaml"
FRONT_ENDS = {  # name -> (description, model overrides)
    "stack": ("4 log-mel frames stacked (no parameters)", {"fbank_subsampling": "stack"}),
    "conv32": ("two 3x3 stride-2 convolutions, 32 channels", {"fbank_subsampling": "conv", "fbank_conv_channels": 32}),
    "conv64": ("two 3x3 stride-2 convolutions, 64 channels", {"fbank_subsampling": "conv", "fbank_conv_channels": 64}),
    "conv128": ("two 3x3 stride-2 convolutions, 128 channels",
                {"fbank_subsampling": "conv", "fbank_conv_channels": 128}),
}
BATCH_SAMPLES = [26667, 25000, 24000, 22000, 21000, 20000]  # 1.25-1.67 s: the demo's training utterances


def build_models(names: list[str], vocab_size: int = 300) -> dict:
    import torch
    import yaml

    from seqattn.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForCTC

    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["model"]
    models = {}
    for name in names:
        torch.manual_seed(0)
        config = Wav2Vec2Config.from_dict({**recipe, **FRONT_ENDS[name][1], "vocab_size": vocab_size})
        models[name] = Wav2Vec2ForCTC(config).train()
    return models


def step_fn(model, waves, lengths):
    from seqattn.models.wav2vec2.masking import generators_for

    def step():
        logits, _, _ = model.training_forward(waves, lengths, mask_generators=generators_for(range(len(lengths))))
        logits.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    return step


def markdown(rows: list[dict], info: dict) -> str:
    lines = [
        "# Filterbank front ends: one fine-tuning step of the demo model",
        "",
        f"`{info['command']}` on {info['machine']}, torch {info['torch']}, {info['threads']} threads, {info['date']}. "
        f"Batch of {len(BATCH_SAMPLES)} utterances (1.25-1.67 s), forward with span masking + backward; the models "
        f"run in alternating rounds in one process, median of {info['reps']} rounds after {info['warmup']} "
        "warm-up rounds; glibc mmap/trim thresholds raised to 2 GiB (as `seqattn` commands do).",
        "",
        "| front end | parameters | step (median) | against stacking |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['description']} | {row['params'] / 1e6:.2f}M | {row['median_ms']:.0f} ms | "
                     f"{row['ratio_to_stack']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 rounds after 1 warm-up: a smoke run for the tests")
    parser.add_argument("--reps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--front-ends", nargs="+", choices=list(FRONT_ENDS), default=list(FRONT_ENDS))
    parser.add_argument("--out-dir", default="bench_out/front_ends")
    args = parser.parse_args()
    if any(os.environ.get(key) != value for key, value in TUNED_MALLOC.items()):
        # glibc's malloc tuned as `seqattn` commands and the other benchmarks' workers have it: start again with it
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **TUNED_MALLOC})
    if args.quick:
        args.reps, args.warmup = 2, 1
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    names = list(dict.fromkeys(["stack", *args.front_ends]))  # stacking is the reference of every ratio
    models = build_models(names)
    lengths = torch.tensor(BATCH_SAMPLES)
    waves = torch.randn(len(BATCH_SAMPLES), max(BATCH_SAMPLES), generator=torch.Generator().manual_seed(0))
    steps = {name: step_fn(model, waves, lengths) for name, model in models.items()}
    times = {name: [] for name in names}
    for round_index in tqdm(range(args.warmup + args.reps), desc="rounds"):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_index >= args.warmup:
                times[name].append(time.perf_counter() - start)
    reference = statistics.median(times["stack"])
    rows = []
    for name in names:
        median = statistics.median(times[name])
        rows.append({"front_end": name, "description": FRONT_ENDS[name][0], "step_s": times[name],
                     "median_ms": 1e3 * median, "ratio_to_stack": median / reference,
                     "params": sum(p.numel() for p in models[name].parameters())})
    info = {**meta(sys.argv, args.threads, args.reps), "warmup": args.warmup}
    write_outputs(args.out_dir, {"meta": info, "rows": rows}, markdown(rows, info))


if __name__ == "__main__":
    main()
