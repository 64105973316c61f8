#!/usr/bin/env python
"""Greedy CTC transcription speed on CPU: seqattn (local attention, one pass; in PyTorch and exported to ONNX
and run by onnxruntime) vs HF transformers' pipeline.

Run:  .venv/bin/python tools/bench_transcribe.py [--quick] [--out-dir bench_out/transcribe]

Both models are wav2vec 2.0 BASE size (95M parameters, GroupNorm extractor, 12 post-LN layers, randomly
initialised: speed does not depend on the weights) with a 70-symbol CTC head and per-utterance waveform
normalisation. seqattn's model has local attention (128 frames = 2.56 s each side) in every layer and
transcribes each file in one pass through ``seqattn.decode.transcribe`` (the CLI's code: file reading,
resampling check, greedy decoding; word timestamps off since HF computes none). HF's
``Wav2Vec2ForCTC`` (SDPA attention) runs in its ``automatic-speech-recognition`` pipeline with
``chunk_length_s`` (stride = chunk/6 each side, HF's default), the documented way to transcribe long audio;
its time includes reading the file with soundfile. Each (implementation, length) runs in a fresh subprocess;
The fbank row is the same BASE-size encoder (768 dims, 12 layers, 3072 FFN)
behind seqattn's filterbank front end (80-bin Kaldi log-mel computed in the model, 4 frames stacked to 40 ms)
with local attention of 128 frames (5.12 s) each side. RTF = wall time / audio time, median of --reps runs
(after one warm-up below 10 minutes; one run above
10 minutes). Peak RSS is the worker's ru_maxrss (model, audio and all). The --hour run transcribes a 1-hour file
once with seqattn (and, on a GPU, with the HF pipeline too). ``--device cuda`` runs the PyTorch models and
the HF pipeline on a GPU (fp32, each run timed to its end; the ONNX row is CPU-only and left out there).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import gpu_name, meta, run_worker, write_outputs

from seqattn.nn.heads import LocalHeads

SAMPLE_RATE = 16000
VOCAB_CHARS = list("अआइईउऊऋएऐओऔकखगघङचछजझञटठडढणतथदधनपफबभमयरलवशषसहािीुूृेैोौंःँ़्")[:66]


def _vocabulary():
    from seqattn.data.text import CharVocabulary

    return CharVocabulary.build(["".join(VOCAB_CHARS)])


def _config(quick: bool, local: bool, fbank: bool = False):
    from seqattn.models.wav2vec2 import base, small
    from seqattn.nn import AttentionConfig

    config = small(dropout=0.0, dropout_input=0.0) if quick else base()
    heads = config.attention.num_heads
    attention = AttentionConfig(
        num_heads=heads, local=LocalHeads(heads=heads if local else 0, window_left=128, window_right=128)
    )
    config.attention, config.normalize_waveform = attention, True
    if fbank:  # the filterbank front end at 40 ms frames in place of the raw-waveform CNN; the encoder is the same
        config.frontend, config.fbank_stack, config.normalize_waveform = "fbank", 4, False
    config.vocab_size = len(_vocabulary())
    return config


def _write_audio(path: str, seconds: float) -> None:
    """Speech-like test signal: noise shaped by a slow syllable-rate envelope over a few harmonics."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, "PCM_16") as out:
        block = 60 * SAMPLE_RATE
        for start in range(0, int(seconds * SAMPLE_RATE), block):
            n = min(block, int(seconds * SAMPLE_RATE) - start)
            t = (start + np.arange(n)) / SAMPLE_RATE
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
            voiced = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((140, 280, 420, 700)))
            out.write((0.1 * envelope * (voiced + 0.5 * rng.standard_normal(n))).astype(np.float32))


def _seqattn_runner(path: str, quick: bool, fbank: bool = False, device: str = "cpu"):
    import torch

    from seqattn.data.audio import AudioSource
    from seqattn.decode.transcribe import InputItem, transcribe
    from seqattn.models.wav2vec2 import Wav2Vec2ForCTC

    model = Wav2Vec2ForCTC(_config(quick, local=True, fbank=fbank)).to(device).eval()
    vocab = _vocabulary()

    def run() -> str:
        result = transcribe(model, vocab, [InputItem("bench", AudioSource(path))], timestamps=False, progress=False)
        if result.failures:
            raise RuntimeError(result.failures[0].reason)
        return result.transcripts[0].text

    return run, torch


def _onnx_runner(path: str, quick: bool, threads: int, workdir: str):
    """The same seqattn model (same seed, so the same weights) exported to ONNX and run by onnxruntime through
    the same transcription code. The export runs before timing, in its own process (`seqattn export onnx`), so
    the worker's peak RSS is onnxruntime's alone."""
    import subprocess

    from seqattn.data.audio import AudioSource
    from seqattn.decode.transcribe import InputItem, transcribe
    from seqattn.interop.onnx import OnnxCTC
    from seqattn.models.io import save_model
    from seqattn.models.wav2vec2 import Wav2Vec2ForCTC

    model_dir, onnx_path = os.path.join(workdir, "model"), os.path.join(workdir, "model.onnx")
    save_model(
        Wav2Vec2ForCTC(_config(quick, local=True)).eval(),
        model_dir,
        extra_files={"tokens.json": _vocabulary().to_json()},
    )
    subprocess.run(
        [sys.executable, "-m", "seqattn.cli.main", "export", "onnx", model_dir, onnx_path],
        check=True,
        capture_output=True,
    )
    runtime = OnnxCTC(onnx_path, threads=threads)

    def run() -> str:
        result = transcribe(
            runtime, runtime.vocabulary, [InputItem("bench", AudioSource(path))], timestamps=False, progress=False
        )
        if result.failures:
            raise RuntimeError(result.failures[0].reason)
        return result.transcripts[0].text

    return run, None


def _hf_runner(path: str, quick: bool, chunk_seconds: float, device: str = "cpu"):
    import soundfile as sf
    import transformers

    from seqattn.interop.hf import config_to_hf

    config = _config(quick, local=False)
    hf_config = transformers.Wav2Vec2Config(**config_to_hf(config), attn_implementation="sdpa")
    model = transformers.Wav2Vec2ForCTC(hf_config).eval()
    vocab = _vocabulary()
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = os.path.join(tmp, "vocab.json")
        tokens = {t: i for i, t in enumerate(vocab.tokens)}
        with open(vocab_file, "w", encoding="utf-8") as f:
            json.dump(tokens, f, ensure_ascii=False)
        tokenizer = transformers.Wav2Vec2CTCTokenizer(
            vocab_file, pad_token=vocab.tokens[0], unk_token=vocab.tokens[1], word_delimiter_token="|"
        )
    extractor = transformers.Wav2Vec2FeatureExtractor(
        sampling_rate=SAMPLE_RATE, do_normalize=True, return_attention_mask=False
    )
    asr = transformers.pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=tokenizer,
        feature_extractor=extractor,
        chunk_length_s=chunk_seconds,
        device=device,
    )

    def run() -> str:
        audio, rate = sf.read(path, dtype="float32")
        return asr({"raw": audio, "sampling_rate": rate})["text"]

    return run, None


def worker(
    impl: str, seconds: float, reps: int, threads: int, quick: bool, hf_chunk: float, device: str = "cpu"
) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "input.wav")
        _write_audio(path, seconds)
        if impl in ("seqattn_local", "seqattn_fbank"):
            run = _seqattn_runner(path, quick, fbank=impl == "seqattn_fbank", device=device)[0]
        elif impl == "seqattn_onnx":
            run = _onnx_runner(path, quick, threads, tmp)[0]
        else:
            run = _hf_runner(path, quick, hf_chunk, device)[0]
        if device.startswith("cuda"):
            untimed = run

            def run() -> str:  # a run ends when its GPU work does
                text = untimed()
                torch.cuda.synchronize()
                return text

        with torch.inference_mode():
            if seconds < 600:
                run()  # warm-up (long inputs amortise first-call costs themselves)
            times, chars = [], 0
            for _ in range(reps):
                start = time.perf_counter()
                chars = len(run())
                times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "impl": impl,
        "seconds": seconds,
        "times_s": times,
        "rtf": [t / seconds for t in times],
        "peak_rss_mib": peak,
        "transcript_chars": chars,
    }


IMPLEMENTATIONS = {
    "seqattn_local": "seqattn, local attention L=R=128, one pass (PyTorch)",
    "seqattn_fbank": "seqattn, fbank front end at 40 ms, same encoder, local L=R=128, one pass (PyTorch)",
    "seqattn_onnx": "the same model exported to ONNX, onnxruntime CPU (one pass up to 120 s, then 120 s chunks "
    "with 20 s context each side)",
    "hf_pipeline": "HF Wav2Vec2ForCTC pipeline, chunk_length_s={chunk:g}",
}


def markdown(rows, info, hf_chunk) -> str:
    by = {(r["impl"], r["seconds"]): r for r in rows}
    lengths = sorted({r["seconds"] for r in rows})
    lines = [
        "# Transcription speed: seqattn vs HF transformers",
        "",
        f"`{info['command']}` on {info.get('gpu') or info['machine']}, torch {info['torch']}, {info['threads']} "
        f"threads, {info['date']}. Greedy CTC, batch 1, median of {info['reps']} runs (a warm-up first below 10 "
        "minutes; one run above); "
        "RTF = wall / audio time; peak = the worker's max RSS.",
        "",
        "| implementation | " + " | ".join(_length_name(s) for s in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]
    for impl, name in IMPLEMENTATIONS.items():
        cells = []
        for s in lengths:
            row = by.get((impl, s))
            if row is None:
                cells.append("—")
            elif "error" in row:
                cells.append(row["error"])
            else:
                cells.append(f"RTF {statistics.median(row['rtf']):.3f}, {row['peak_rss_mib']:.0f} MiB")
        lines.append(f"| {name.format(chunk=hf_chunk)} | " + " | ".join(cells) + " |")
    for title, slow, fast in (
        ("HF time / seqattn time; > 1 means seqattn is faster", "hf_pipeline", "seqattn_local"),
        ("HF time / seqattn fbank time; > 1 means the fbank model is faster", "hf_pipeline", "seqattn_fbank"),
        ("PyTorch time / onnxruntime time, same model; > 1 means ONNX is faster", "seqattn_local", "seqattn_onnx"),
    ):
        lines += ["", f"## Ratios ({title})", ""]
        for s in lengths:
            a, b = by.get((slow, s), {}), by.get((fast, s), {})
            if "times_s" in a and "times_s" in b:
                ratio = statistics.median(a["times_s"]) / statistics.median(b["times_s"])
                lines.append(f"- {_length_name(s)}: {ratio:.2f}x")
    lines += [
        "",
        "Targets: >= 1.3x faster than HF at 60 s and 10 min; a 1-hour file in one pass with peak RSS "
        "<= 6 GB; RTF <= 0.3 on 2 cores; the fbank model >= 3x faster than HF at 10 min.",
    ]
    return "\n".join(lines) + "\n"


def _length_name(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small() models, a 12 s input (HF in 4 s chunks), 2 reps: a smoke run for the tests",
    )
    parser.add_argument("--lengths", type=float, nargs="+", default=[60.0, 600.0], help="input lengths in seconds")
    parser.add_argument("--hour", action="store_true", help="also transcribe a 1-hour file with seqattn (once)")
    parser.add_argument("--hf-chunk", type=float, default=30.0, help="HF pipeline chunk_length_s")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out-dir", default="bench_out/transcribe")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--implementations", nargs="+", choices=list(IMPLEMENTATIONS), default=list(IMPLEMENTATIONS))
    args = parser.parse_args()
    if args.worker:
        reps = args.reps if args.seconds <= 600 else 1
        print(json.dumps(worker(args.worker, args.seconds, reps, args.threads, args.quick, args.hf_chunk, args.device)))
        return
    if args.quick:
        args.lengths, args.reps, args.hf_chunk = [12.0], 2, 4.0
    from tqdm import tqdm

    gpu = args.device.startswith("cuda")
    chosen = [impl for impl in args.implementations if not (gpu and impl == "seqattn_onnx")]
    jobs = [(impl, s) for s in args.lengths for impl in chosen]
    if args.hour:  # the HF pipeline's hour runs on a GPU only (on the CPU it would take most of an hour)
        hour = ["seqattn_local"] + (["hf_pipeline"] if gpu else [])
        jobs += [(impl, 3600.0) for impl in hour if impl in chosen]
    rows = []
    for impl, seconds in tqdm(jobs, desc="transcription benchmark", unit="run"):
        worker_args = [
            "--worker",
            impl,
            "--seconds",
            str(seconds),
            "--reps",
            str(args.reps),
            "--threads",
            str(args.threads),
            "--hf-chunk",
            str(args.hf_chunk),
            "--device",
            args.device,
        ] + (["--quick"] if args.quick else [])
        rows.append({"impl": impl, "seconds": seconds, **run_worker(__file__, worker_args, args.timeout)})
        info = {**meta(sys.argv, args.threads, args.reps), "device": args.device, "gpu": gpu_name(args.device)}
        write_outputs(
            args.out_dir, {"meta": info, "hf_chunk_s": args.hf_chunk, "rows": rows}, markdown(rows, info, args.hf_chunk)
        )  # after every row: a run cut short keeps what it did


if __name__ == "__main__":
    main()
