#!/usr/bin/env python
"""One wav2vec 2.0 pretraining step (forward + backward) in seqattn vs HF transformers, same config.

Run:  .venv/bin/python tools/bench_wav2vec2.py [--quick] [--out-dir bench_out/wav2vec2]

The model is seqattn's ``small()`` preset (4 layers, 256 dims, 256-channel CNN; ``--preset base``: BASE, 12
layers of 768 dims over the 512-channel CNN) and the HF ``Wav2Vec2ForPreTraining`` built with the same sizes
(SDPA attention). Both include their masking and negative sampling in the step. seqattn runs with full
attention (the original model), with local attention of 128 frames each side, and with the log-mel
filterbank front end stacked to 40 ms under the same local encoder (contrastive objective, and BEST-RQ), and
conv-subsampled to 40 ms instead (BEST-RQ).
Each (implementation, crop) runs in its own subprocess: median of --reps steps after a warm-up, and peak
RSS above the pre-step level. Batch size 1. ``--device cuda`` runs both on a GPU under bf16 autocast (each
step timed to the end of its GPU work; peak = the most GPU memory allocated during the first step).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import gpu_name, median_ms, meta, peak_above_baseline, run_worker, timed, write_outputs

from seqattn.nn.heads import LocalHeads

IMPLEMENTATIONS = {
    "hf": "HF Wav2Vec2ForPreTraining (SDPA)",
    "seqattn_full": "seqattn, full attention",
    "seqattn_local": "seqattn, local attention L=R=128 frames",
    "seqattn_fbank_local": "seqattn, fbank 40 ms, local L=R=128, contrastive",
    "seqattn_fbank_bestrq": "seqattn, fbank 40 ms, local L=R=128, BEST-RQ",
    "seqattn_fbank_conv_bestrq": "seqattn, fbank conv-subsampled to 40 ms (2 convs of 128 channels), local L=R=128, "
                                 "BEST-RQ",
}


def _preset(name: str, **overrides):
    from seqattn.models.wav2vec2 import base, small

    return (base if name == "base" else small)(**overrides)


def _hf_model(preset: str):
    import transformers

    c = _preset(preset)
    config = transformers.Wav2Vec2Config(
        hidden_size=c.embed_dim, num_hidden_layers=c.num_layers, num_attention_heads=c.attention.num_heads,
        intermediate_size=c.ffn_dim, conv_dim=[layer[0] for layer in c.conv_layers],
        conv_kernel=[layer[1] for layer in c.conv_layers],
        conv_stride=[layer[2] for layer in c.conv_layers], conv_bias=c.conv_bias, feat_extract_norm="group",
        num_conv_pos_embeddings=c.conv_pos, num_conv_pos_embedding_groups=c.conv_pos_groups,
        num_codevector_groups=c.latent_groups, num_codevectors_per_group=c.latent_vars,
        codevector_dim=c.latent_dim or c.final_dim, proj_codevector_dim=c.final_dim, num_negatives=c.num_negatives,
        mask_time_prob=c.mask_prob, mask_time_length=c.mask_length, layerdrop=0.0, hidden_dropout=c.dropout,
        attention_dropout=0.0, activation_dropout=c.activation_dropout, feat_proj_dropout=c.dropout_input,
        feat_quantizer_dropout=c.dropout_features, attn_implementation="sdpa",
    )
    return transformers.Wav2Vec2ForPreTraining(config).train()


def _step(impl: str, seconds: float, preset: str, device: str = "cpu"):
    """One training step of ``impl`` on ``device`` (bf16 autocast on a GPU), returned as a callable."""
    import contextlib

    import torch

    device = torch.device(device)
    waves = torch.randn(1, int(seconds * 16000)).to(device)
    precision = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    if impl == "hf":
        from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

        model = _hf_model(preset).to(device)
        frames = int(model._get_feat_extract_output_lengths(waves.shape[1]))

        def step():
            mask = _compute_mask_indices((1, frames), model.config.mask_time_prob, model.config.mask_time_length)
            negatives = _sample_negative_indices((1, frames), model.config.num_negatives, mask)
            with precision:
                out = model(waves, mask_time_indices=torch.from_numpy(mask).to(device),
                            sampled_negative_indices=torch.from_numpy(negatives).to(device))
            out.loss.backward()
            model.zero_grad(set_to_none=True)

        return step
    from seqattn.models.wav2vec2 import Wav2Vec2ForPretraining
    from seqattn.models.wav2vec2.masking import generators_for
    from seqattn.nn import AttentionConfig

    config = _preset(preset, layerdrop=0.0)
    if impl != "seqattn_full":
        heads = config.attention.num_heads
        config.attention = AttentionConfig(num_heads=heads, local=LocalHeads(heads=heads, window_left=128,
                                                                             window_right=128))
    if impl.startswith("seqattn_fbank"):
        config.frontend, config.fbank_stack = "fbank", 4
    if impl in ("seqattn_fbank_bestrq", "seqattn_fbank_conv_bestrq"):
        config.objective = "bestrq"
    if impl == "seqattn_fbank_conv_bestrq":
        config.fbank_subsampling = "conv"
    model = Wav2Vec2ForPretraining(config).to(device).train()
    counter = iter(range(10**9))

    def step():  # the trainer's way: every random draw on the host, then moved with the batch
        draws = model.draw_training(None, waves.shape[1], generators_for([next(counter)])).to_device(device)
        with precision:
            loss = model.pretraining_loss(waves, None, draws=draws).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def worker(impl: str, seconds: float, reps: int, threads: int, preset: str, device: str = "cpu") -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    step = _step(impl, seconds, preset, device)
    if device.startswith("cuda"):
        def synced():  # a step ends when its GPU work does
            step()
            torch.cuda.synchronize()

        torch.cuda.reset_peak_memory_stats()
        synced()
        peak = torch.cuda.max_memory_allocated() / 2**20
        return {"impl": impl, "seconds": seconds, "step_s": timed(synced, reps), "peak_mib": peak}
    peak = peak_above_baseline(step)  # first step of a fresh process: nothing cached by the allocator yet
    return {"impl": impl, "seconds": seconds, "step_s": timed(step, reps), "peak_mib": peak}


def markdown(rows, info, crops) -> str:
    by = {(r["impl"], r["seconds"]): r for r in rows}
    lines = [
        "# wav2vec 2.0 pretraining step benchmark",
        "",
        f"`{info['command']}` on {info.get('gpu') or info['machine']}, torch {info['torch']}, {info['threads']} "
        f"threads, {info['date']}. "
        f"Batch 1, `{info['preset']}()` preset, median of {info['reps']} steps (forward + backward incl. masking); "
        + ("bf16 autocast; peak = the most GPU memory allocated during the first step."
           if info.get("gpu") else
           "peak = max RSS during the first step of a fresh process above the level before it; glibc mmap/trim "
           "thresholds raised to 2 GiB in every worker (as `seqattn` commands do)."),
        "",
        "| implementation | " + " | ".join(f"{s:.0f} s crop" for s in crops) + " |",
        "|---|" + "---|" * len(crops),
    ]
    for impl, name in IMPLEMENTATIONS.items():
        cells = []
        for s in crops:
            row = by.get((impl, s), {})
            if "error" in row or not row:
                cells.append(row.get("error", "—"))
            else:
                cells.append(f"{median_ms(row['step_s']):.0f} ms, {row['peak_mib']:.0f} MiB")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Ratios (HF time / seqattn time; > 1 means seqattn is faster)", ""]
    for s in crops:
        hf = by.get(("hf", s), {})
        for impl in IMPLEMENTATIONS:
            row = by.get((impl, s), {})
            if impl != "hf" and "step_s" in hf and "step_s" in row:
                ratio = median_ms(hf["step_s"]) / median_ms(row["step_s"])
                mem = f"{row['peak_mib']:.0f} vs HF {hf['peak_mib']:.0f} MiB"
                lines.append(f"- {s:.0f} s, {IMPLEMENTATIONS[impl]}: {ratio:.2f}x ({mem})")
    lines += ["", "## Ratios (seqattn raw-CNN local time / fbank time)", ""]
    for s in crops:
        cnn = by.get(("seqattn_local", s), {})
        for impl in ("seqattn_fbank_local", "seqattn_fbank_bestrq", "seqattn_fbank_conv_bestrq"):
            row = by.get((impl, s), {})
            if "step_s" in cnn and "step_s" in row:
                lines.append(f"- {s:.0f} s, {IMPLEMENTATIONS[impl]}: "
                             f"{median_ms(cnn['step_s']) / median_ms(row['step_s']):.2f}x")
    lines += ["", "Targets: full attention no slower than HF (HF/seqattn >= 0.95, i.e. time ratio <= 1.05); "
              "local at 60 s at least 2x faster than HF with lower peak memory; fbank 40 ms with local +-128 at "
              "60 s (BASE) at least 3x faster than HF and 2x faster than the raw-CNN local model."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="2 s crops, 2 reps: a smoke run for the tests")
    parser.add_argument("--crops", type=float, nargs="+", default=[15.0, 60.0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out-dir", default="bench_out/wav2vec2")
    parser.add_argument("--preset", choices=["small", "base"], default="small")
    parser.add_argument("--implementations", nargs="+", choices=list(IMPLEMENTATIONS), default=list(IMPLEMENTATIONS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (bf16 autocast on a GPU)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.seconds, args.reps, args.threads, args.preset, args.device)))
        return
    if args.quick:
        args.crops, args.reps = [2.0], 2
    from tqdm import tqdm

    rows = []
    for seconds in args.crops:
        for impl in tqdm(args.implementations, desc=f"{seconds:.0f} s crops"):
            worker_args = ["--worker", impl, "--seconds", str(seconds), "--reps", str(args.reps),
                           "--threads", str(args.threads), "--preset", args.preset, "--device", args.device]
            rows.append({"impl": impl, "seconds": seconds, **run_worker(__file__, worker_args, args.timeout)})
            info = {**meta(sys.argv, args.threads, args.reps), "preset": args.preset, "device": args.device,
                    "gpu": gpu_name(args.device)}
            write_outputs(args.out_dir, {"meta": info, "rows": rows}, markdown(rows, info, args.crops))  # each row


if __name__ == "__main__":
    main()
