#!/usr/bin/env python
"""Load tests for docs/RELIABILITY.md.

  many-files  `seqattn transcribe` over N short files (default 1000) in one run: RSS of the process sampled
              while it works, RSS when 10% and 100% of the outputs exist, and files/s over the first and the
              last 10% of the files. Target: RSS after N <= 1.1x RSS after N/10, steady throughput.
  long-audio  `seqattn transcribe` of files of H hours (default 0.25 and 2) with a local-attention BASE-size
              model, streamed window by window (the default for files over 10 minutes): peak RSS and wall
              time per length, and the same shortest file in one pass (--stream-seconds inf) as the
              competitor (--one-pass-hours picks other lengths). --runs N repeats the whole round N times
              and reports medians. Target: bounded memory, i.e. the longest file's peak RSS about the
              shortest's.

Run:  python tools/bench_reliability.py many-files long-audio [--files 1000] [--hours 0.25 2] [--runs 3] [--quick]
Writes bench_out/reliability/results.json and results.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
from benchlib import meta, write_outputs  # noqa: E402


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def make_model(path: Path, size: str) -> Path:
    import torch

    from seqattn.data.text import CharVocabulary
    from seqattn.models.io import save_model
    from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, presets
    from seqattn.nn import AttentionConfig

    vocab = CharVocabulary.build(["नमस्ते दुनिया भारत"])
    local = AttentionConfig(num_heads=12 if size == "base" else 4, local_heads=12 if size == "base" else 4,
                            window_left=128, window_right=128)
    config = (presets.base if size == "base" else presets.tiny)(vocab_size=len(vocab), attention=local)
    torch.manual_seed(0)
    return save_model(Wav2Vec2ForCTC(config), path, extra_files={"tokens.json": vocab.to_json()})


def watch(cmd: list[str], out_dir: Path | None, marks: list[int], extension: str = ".txt") -> dict:
    """Run ``cmd``; sample its RSS every 50 ms; note RSS and time when ``out_dir`` holds each mark of outputs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak, seen = 0.0, {}
    while proc.poll() is None:
        rss = rss_mib(proc.pid)
        peak = max(peak, rss)
        if out_dir is not None and out_dir.is_dir():
            done = sum(1 for p in out_dir.iterdir() if p.suffix == extension)
            for mark in marks:
                if done >= mark and mark not in seen:
                    seen[mark] = {"rss_mib": rss, "seconds": time.perf_counter() - started}
        time.sleep(0.05)
    stderr = proc.stderr.read().decode("utf-8", "replace")
    return {"returncode": proc.returncode, "wall_s": time.perf_counter() - started, "peak_rss_mib": peak,
            "marks": seen, "stderr_tail": stderr[-300:]}


def many_files(args, workdir: Path) -> dict:
    """Two runs of the same command, over the first N/10 files and over all N: their peak RSS and files/s
    (the CLI writes its outputs at the end, so one run cannot be watched file by file)."""
    model = make_model(workdir / "model", "tiny")
    rng = np.random.default_rng(0)
    runs = {}
    for count in (args.files // 10, args.files):
        audio = workdir / f"audio_{count}"
        audio.mkdir()
        for i in range(count):
            seconds = rng.uniform(1.0, 3.0)
            t = np.arange(int(seconds * 16000)) / 16000
            sf.write(audio / f"utt{i:05d}.wav", (0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t)).astype(np.float32),
                     16000)
        run = watch([sys.executable, "-m", "seqattn.cli.main", "transcribe", str(model), str(audio), "--output-dir",
                     str(workdir / f"out_{count}"), "--quiet", "--threads", "2"], None, [])
        run["files_per_s"] = count / run["wall_s"]
        runs[count] = run
    small, large = runs[args.files // 10], runs[args.files]
    return {"files": args.files, "runs": {str(k): v for k, v in runs.items()},
            "rss_ratio": large["peak_rss_mib"] / small["peak_rss_mib"],
            "returncode": max(small["returncode"], large["returncode"])}


def write_long_file(path: Path, hours: float) -> None:
    """Tones plus noise, written a minute at a time so that the file is never all in memory here."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", 16000, 1, format="FLAC") as handle:
        for _ in range(max(1, int(round(hours * 60)))):
            t = np.arange(60 * 16000) / 16000
            handle.write((0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.01 * rng.standard_normal(t.size))
                         .astype(np.float32))


def long_audio(args, workdir: Path) -> dict:
    """``--runs`` rounds; each round transcribes every length streamed, and the lengths in ``--one-pass-hours``
    again in one pass (the old way, the competitor), so that a round's figures share the machine's state."""
    model = make_model(workdir / "model_base", "base")
    lengths = sorted(args.hours)
    one_pass = {hours for hours in args.one_pass_hours if hours in lengths} if args.one_pass_hours else {lengths[0]}
    paths = {}
    for hours in lengths:
        paths[hours] = workdir / f"long_{hours:g}h.flac"
        write_long_file(paths[hours], hours)
    runs = []
    for repeat in range(args.runs):
        for hours in lengths:
            modes = [("streamed", str(args.stream_seconds))] + ([("one pass", "inf")] if hours in one_pass else [])
            words = {}
            for mode, stream_seconds in modes:
                out = workdir / f"out_{repeat}_{hours:g}_{stream_seconds}"
                run = watch([sys.executable, "-m", "seqattn.cli.main", "transcribe", str(model), str(paths[hours]),
                             "--output-dir", str(out), "--quiet", "--threads", "2", "--output-format", "ctm",
                             "--stream-seconds", stream_seconds], None, [])
                ctm = out / f"{paths[hours].stem}.ctm"
                # (start, duration, word) per CTM line; confidences are left out (printed rounded)
                words[mode] = [line.split()[2:5] for line in ctm.read_text().splitlines()] if ctm.is_file() else []
                runs.append({"repeat": repeat, "hours": hours, "mode": mode, "ctm_words": len(words[mode]),
                             "rtf": run["wall_s"] / (hours * 3600), **run})
                print(runs[-1], flush=True)
            if len(words) == 2:
                runs[-1]["same_words_and_times_as_streamed"] = words["one pass"] == words["streamed"]
    summary = []
    for hours in lengths:
        for mode in ("streamed", "one pass"):
            group = [run for run in runs if run["hours"] == hours and run["mode"] == mode]
            if group:
                summary.append({"hours": hours, "mode": mode, "runs": len(group),
                                "exit_codes": sorted({run["returncode"] for run in group}),
                                **{key: spread([run[key] for run in group]) for key in ("wall_s", "rtf", "peak_rss_mib")},
                                "ctm_words": sorted({run["ctm_words"] for run in group}),
                                "same_as_streamed": [run["same_words_and_times_as_streamed"] for run in group
                                                     if "same_words_and_times_as_streamed" in run]})
    streamed = {run["repeat"]: {} for run in runs}
    for run in runs:
        if run["mode"] == "streamed":
            streamed[run["repeat"]][run["hours"]] = run["peak_rss_mib"]
    ratios = [peaks[lengths[-1]] / peaks[lengths[0]] for peaks in streamed.values()]
    return {"runs": runs, "summary": summary, "rss_ratio_longest_to_shortest": spread(ratios),
            "returncode": max(run["returncode"] for run in runs)}


def spread(values: list[float]) -> dict:
    """Median and range of one figure over the rounds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def markdown(results: dict, info: dict) -> str:
    lines = [f"# Load tests ({info['machine']}, torch {info['torch']}, {info['date']})", "", f"`{info['command']}`", ""]
    if "many_files" in results:
        r = results["many_files"]
        small, large = r["runs"][str(r["files"] // 10)], r["runs"][str(r["files"])]
        lines += ["## Many short files in one `seqattn transcribe` run (1-3 s each, tiny model)", "",
                  "| files | exit | wall (s) | files/s | peak RSS (MiB) |", "|---|---|---|---|---|"]
        for count, run in ((r["files"] // 10, small), (r["files"], large)):
            lines.append(f"| {count} | {run['returncode']} | {run['wall_s']:.1f} | {run['files_per_s']:.1f} | "
                         f"{run['peak_rss_mib']:.0f} |")
        lines += ["", f"RSS ratio {r['files']} / {r['files'] // 10} files: {r['rss_ratio']:.3f} (target <= 1.1)", ""]
    if "long_audio" in results:
        r = results["long_audio"]
        lines += ["## Long files, local-attention BASE model (12 layers, +-128 frames), one `transcribe` run each", "",
                  "Median (range) over the rounds; every length and mode ran once per round, in the same round.", "",
                  "| hours | mode | runs | exit | wall (s) | RTF | peak RSS (MiB) | CTM words |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in r["summary"]:
            same = row["same_as_streamed"]
            lines.append(f"| {row['hours']:.3g} | {row['mode']} | {row['runs']} | "
                         f"{'/'.join(map(str, row['exit_codes']))} | {_cell(row['wall_s'], '.0f')} | "
                         f"{_cell(row['rtf'], '.3f')} | {_cell(row['peak_rss_mib'], '.0f')} | "
                         f"{'/'.join(map(str, row['ctm_words']))}"
                         + ("" if not same else f" (same words and times as streamed in {sum(same)} of {len(same)})")
                         + " |")
        ratio = r["rss_ratio_longest_to_shortest"]
        lines += ["", f"Peak RSS, longest / shortest streamed file, per round: "
                      f"{', '.join(f'{v:.3f}' for v in ratio['values'])} (median {ratio['median']:.3f})", ""]
    return "\n".join(lines) + "\n"


def _cell(figure: dict, fmt: str) -> str:
    if figure["min"] == figure["max"]:
        return format(figure["median"], fmt)
    return f"{figure['median']:{fmt}} ({figure['min']:{fmt}}-{figure['max']:{fmt}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", default=["many-files", "long-audio"])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--hours", type=float, nargs="+", default=[0.25, 2.0])
    parser.add_argument("--one-pass-hours", type=float, nargs="*", default=None,
                        help="lengths also transcribed in one pass (default: the shortest)")
    parser.add_argument("--runs", type=int, default=1, help="long-audio rounds; the table gives medians")
    parser.add_argument("--stream-seconds", type=float, default=600.0, help="transcribe's --stream-seconds")
    parser.add_argument("--quick", action="store_true", help="50 files and 1-2 minutes of audio (a smoke run)")
    parser.add_argument("--out-dir", default="bench_out/reliability")
    args = parser.parse_args()
    if args.quick:
        args.files, args.hours, args.stream_seconds = 50, [1 / 60, 2 / 60], 30.0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for experiment in args.experiments:
            workdir = Path(tmp) / experiment
            workdir.mkdir()
            if experiment == "many-files":
                results["many_files"] = many_files(args, workdir)
            elif experiment == "long-audio":
                results["long_audio"] = long_audio(args, workdir)
            else:
                sys.exit(f"unknown experiment {experiment!r}")
    info = meta(sys.argv, os.cpu_count() or 1, 1)
    write_outputs(args.out_dir, {"meta": info, **results}, markdown(results, info))


if __name__ == "__main__":
    main()
