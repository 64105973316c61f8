#!/usr/bin/env python
"""Load tests for docs/RELIABILITY.md.

  many-files  `seqattn transcribe` over N short files (default 1000) in one run, followed through its progress
              bar: RSS when N/10 and when N files are done, files/s over the second and the last tenth.
              --runs N repeats the run. Target: RSS after N <= 1.1x RSS after N/10 in the same run, steady
              throughput.
  long-audio  `seqattn transcribe` of files of H hours (default 0.25 and 2) with a local-attention BASE-size
              model, streamed window by window (the default for files over 10 minutes): peak RSS and wall
              time per length, and the same shortest file in one pass (--stream-seconds inf) as the
              competitor (--one-pass-hours picks other lengths). --runs N repeats the whole round N times
              and reports medians. Target: bounded memory, i.e. the longest file's peak RSS about the
              shortest's.
  model-load  `seqattn.load_model` of a BASE-size CTC model directory (95M parameters), which first checks
              config.json against its dataclass and against the safetensors header on a meta-device model,
              against the unchecked path it replaced (build the model, read the weights, load_state_dict),
              alternating in one process, --load-reps times each. Target: the checked loader no slower.

Run:  python tools/bench_reliability.py many-files long-audio model-load [--files 1000] [--hours 0.25 2] [--runs 3]
      [--quick]
Writes bench_out/reliability/results.json and results.md.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
from benchlib import current_rss_mib, median_range, meta, write_outputs

from seqattn.nn.heads import LocalHeads


def rss_mib(pid: int) -> float:
    try:
        return current_rss_mib(pid)
    except OSError:  # the process has just exited
        return 0.0


def make_model(path: Path, size: str) -> Path:
    import torch

    from seqattn.data.text import CharVocabulary
    from seqattn.models.io import save_model
    from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, presets
    from seqattn.nn import AttentionConfig

    vocab = CharVocabulary.build(["नमस्ते दुनिया भारत"])
    local = AttentionConfig(
        num_heads=12 if size == "base" else 4,
        local=LocalHeads(heads=12 if size == "base" else 4, window_left=128, window_right=128),
    )
    config = (presets.base if size == "base" else presets.tiny)(vocab_size=len(vocab), attention=local)
    torch.manual_seed(0)
    return save_model(Wav2Vec2ForCTC(config), path, extra_files={"tokens.json": vocab.to_json()})


def watch(cmd: list[str], marks: list[int] = ()) -> dict:
    """Run ``cmd``; sample its RSS every 50 ms. With ``marks``, follow its tqdm bar on stderr and note RSS
    and time when the count of finished inputs first reaches each mark."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    progress, stderr = [(0.0, 0)], collections.deque(maxlen=64)  # (seconds, inputs done) at each redraw

    def follow_stderr():  # tqdm redraws "... 123/1000 [..." after each update, separated by \r
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            text = chunk.decode("utf-8", "replace")
            stderr.append(text)
            counts = re.findall(r"(\d+)/\d+ \[", text)
            if counts and int(counts[-1]) > progress[-1][1]:
                progress.append((time.perf_counter() - started, int(counts[-1])))

    reader = threading.Thread(target=follow_stderr, daemon=True)
    reader.start()
    peak, rss_at_mark = 0.0, {}
    while proc.poll() is None:
        rss = rss_mib(proc.pid)
        peak = max(peak, rss)
        for mark in marks:
            if progress[-1][1] >= mark and mark not in rss_at_mark:
                rss_at_mark[mark] = rss
        time.sleep(0.05)
    reader.join()
    seen = {}
    for (
        mark,
        rss,
    ) in rss_at_mark.items():  # when the bar first showed the mark (the reader's clock, finer than RSS polls)
        seconds, done = next((t, n) for t, n in progress if n >= mark)
        seen[str(mark)] = {"done": done, "rss_mib": rss, "seconds": seconds}
    return {
        "returncode": proc.returncode,
        "wall_s": time.perf_counter() - started,
        "peak_rss_mib": peak,
        "marks": seen,
        "stderr_tail": "".join(stderr)[-300:],
    }


def files_per_s(first: dict, last: dict) -> float | None:
    """Throughput between two progress marks of ``watch``; None when both came in one redraw of the bar."""
    elapsed = last["seconds"] - first["seconds"]
    return (last["done"] - first["done"]) / elapsed if elapsed > 0 else None


def many_files(args, workdir: Path) -> dict:
    """``--runs`` runs of one `transcribe` over N files, each watched through its progress bar: RSS when
    N/10 and N files are done (the target compares the two within one run), and files/s over the second and
    the last tenth of the files (the first holds the start-up)."""
    model = make_model(workdir / "model", "tiny")
    rng = np.random.default_rng(0)
    audio = workdir / "audio"
    audio.mkdir()
    for i in range(args.files):
        seconds = rng.uniform(1.0, 3.0)
        t = np.arange(int(seconds * 16000)) / 16000
        sf.write(
            audio / f"utt{i:05d}.wav", (0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t)).astype(np.float32), 16000
        )
    tenth = args.files // 10
    marks = [tenth, 2 * tenth, args.files - tenth, args.files]
    runs = []
    for repeat in range(args.runs):
        run = watch(
            [
                sys.executable,
                "-m",
                "seqattn.cli.main",
                "transcribe",
                str(model),
                str(audio),
                "--output-dir",
                str(workdir / f"out_{repeat}"),
                "--threads",
                "2",
            ],
            marks,
        )
        seen = run["marks"]
        if all(str(mark) in seen for mark in marks):
            run.update(
                rss_first_tenth_mib=seen[str(tenth)]["rss_mib"],
                rss_all_mib=seen[str(args.files)]["rss_mib"],
                files_per_s_second_tenth=files_per_s(seen[str(tenth)], seen[str(2 * tenth)]),
                files_per_s_last_tenth=files_per_s(seen[str(args.files - tenth)], seen[str(args.files)]),
            )
            run["rss_ratio"] = run["rss_all_mib"] / run["rss_first_tenth_mib"]
        runs.append(run)
        print({key: value for key, value in run.items() if key != "stderr_tail"}, flush=True)
    complete = [run for run in runs if "rss_ratio" in run]
    summary = {}
    for key in (
        "rss_ratio",
        "rss_first_tenth_mib",
        "rss_all_mib",
        "peak_rss_mib",
        "files_per_s_second_tenth",
        "files_per_s_last_tenth",
    ):
        values = [run[key] for run in complete if run[key] is not None]
        summary[key] = median_range(values) if values else None
    return {
        "files": args.files,
        "runs": runs,
        "summary": summary,
        "returncode": max(run["returncode"] for run in runs) or int(len(complete) < len(runs)),
    }


def write_long_file(path: Path, hours: float) -> None:
    """Tones plus noise, written a minute at a time so that the file is never all in memory here."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", 16000, 1, format="FLAC") as handle:
        for _ in range(max(1, int(round(hours * 60)))):
            t = np.arange(60 * 16000) / 16000
            handle.write(
                (0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.01 * rng.standard_normal(t.size)).astype(
                    np.float32
                )
            )


def long_audio(args, workdir: Path) -> dict:
    """``--runs`` rounds; each round transcribes every length streamed, and the lengths in ``--one-pass-hours``
    again in one pass (the old way, the competitor), so that a round's figures share the machine's state."""
    model = make_model(workdir / "model_base", "tiny" if args.quick else "base")  # quick: a smoke run of the logic
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
                run = watch(
                    [
                        sys.executable,
                        "-m",
                        "seqattn.cli.main",
                        "transcribe",
                        str(model),
                        str(paths[hours]),
                        "--output-dir",
                        str(out),
                        "--quiet",
                        "--threads",
                        "2",
                        "--output-format",
                        "ctm",
                        "--stream-seconds",
                        stream_seconds,
                    ]
                )
                ctm = out / f"{paths[hours].stem}.ctm"
                # (start, duration, word) per CTM line; confidences are left out (printed rounded)
                words[mode] = [line.split()[2:5] for line in ctm.read_text().splitlines()] if ctm.is_file() else []
                runs.append(
                    {
                        "repeat": repeat,
                        "hours": hours,
                        "mode": mode,
                        "ctm_words": len(words[mode]),
                        "rtf": run["wall_s"] / (hours * 3600),
                        **run,
                    }
                )
                print(runs[-1], flush=True)
            if len(words) == 2:
                runs[-1]["same_words_and_times_as_streamed"] = words["one pass"] == words["streamed"]
    summary = []
    for hours in lengths:
        for mode in ("streamed", "one pass"):
            group = [run for run in runs if run["hours"] == hours and run["mode"] == mode]
            if group:
                summary.append(
                    {
                        "hours": hours,
                        "mode": mode,
                        "runs": len(group),
                        "exit_codes": sorted({run["returncode"] for run in group}),
                        **{key: median_range([run[key] for run in group]) for key in ("wall_s", "rtf", "peak_rss_mib")},
                        "ctm_words": sorted({run["ctm_words"] for run in group}),
                        "same_as_streamed": [
                            run["same_words_and_times_as_streamed"]
                            for run in group
                            if "same_words_and_times_as_streamed" in run
                        ],
                    }
                )
    streamed = {run["repeat"]: {} for run in runs}
    for run in runs:
        if run["mode"] == "streamed":
            streamed[run["repeat"]][run["hours"]] = run["peak_rss_mib"]
    ratios = [peaks[lengths[-1]] / peaks[lengths[0]] for peaks in streamed.values()]
    return {
        "runs": runs,
        "summary": summary,
        "rss_ratio_longest_to_shortest": median_range(ratios),
        "returncode": max(run["returncode"] for run in runs),
    }


def model_load(args, workdir: Path) -> dict:
    """Median seconds of the checked loader and of the unchecked one, interleaved in one process."""
    import torch
    from safetensors.torch import load_file

    from seqattn.models import io

    torch.set_num_threads(2)
    path = make_model(workdir / "model_base", "tiny" if args.quick else "base")

    def unchecked():
        meta_values = io.read_model_config(path)
        model = io.build_model(meta_values["model_type"], meta_values["config"])
        model.load_state_dict(load_file(str(path / io.WEIGHTS_FILE)))
        return model.eval()

    times = {"checked (load_model)": [], "unchecked (build + load_state_dict)": []}
    loaders = {"checked (load_model)": lambda: io.load_model(path), "unchecked (build + load_state_dict)": unchecked}
    for _ in range(args.load_reps + 1):  # the first round warms the page cache and allocator, and is dropped
        for name, load in loaders.items():
            start = time.perf_counter()
            load()
            times[name].append(time.perf_counter() - start)
    rows = [{"loader": name, "seconds": median_range(values[1:])} for name, values in times.items()]
    ratio = rows[0]["seconds"]["median"] / rows[1]["seconds"]["median"]
    parameters = sum(t.numel() for t in load_file(str(path / io.WEIGHTS_FILE)).values())
    return {"rows": rows, "checked_over_unchecked": ratio, "parameters": parameters, "returncode": 0}


def markdown(results: dict, info: dict) -> str:
    lines = [f"# Load tests ({info['machine']}, torch {info['torch']}, {info['date']})", "", f"`{info['command']}`", ""]
    if "many_files" in results:
        r = results["many_files"]
        tenth = r["files"] // 10
        lines += [
            f"## {r['files']} short files in one `seqattn transcribe` run (1-3 s each, tiny model)",
            "",
            f"RSS when {tenth} and when all {r['files']} files are done, read in the same run from its "
            "progress bar; files/s over the second and the last tenth of the files (the first tenth holds "
            "the start-up).",
            "",
            f"| run | exit | wall (s) | RSS after {tenth} (MiB) | RSS after {r['files']} (MiB) | ratio | "
            "peak RSS (MiB) | files/s, second tenth | files/s, last tenth |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for i, run in enumerate(r["runs"]):
            if "rss_ratio" not in run:
                lines.append(
                    f"| {i} | {run['returncode']} | {run['wall_s']:.1f} | progress not seen: "
                    f"{run['stderr_tail'][-80:]!r} | | | | | |"
                )
                continue
            lines.append(
                f"| {i} | {run['returncode']} | {run['wall_s']:.1f} | {run['rss_first_tenth_mib']:.0f} | "
                f"{run['rss_all_mib']:.0f} | {run['rss_ratio']:.3f} | {run['peak_rss_mib']:.0f} | "
                f"{_rate(run['files_per_s_second_tenth'])} | {_rate(run['files_per_s_last_tenth'])} |"
            )
        if r["summary"]["rss_ratio"]:
            ratio = r["summary"]["rss_ratio"]
            lines += [
                "",
                f"RSS ratio after {r['files']} / after {tenth} files: median {ratio['median']:.3f} "
                f"(range {ratio['min']:.3f}-{ratio['max']:.3f}; target <= 1.1)",
                "",
            ]
    if "long_audio" in results:
        r = results["long_audio"]
        lines += [
            "## Long files, local-attention BASE model (12 layers, +-128 frames), one `transcribe` run each",
            "",
            "Median (range) over the rounds; every length and mode ran once per round, in the same round.",
            "",
            "| hours | mode | runs | exit | wall (s) | RTF | peak RSS (MiB) | CTM words |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in r["summary"]:
            same = row["same_as_streamed"]
            lines.append(
                f"| {row['hours']:.3g} | {row['mode']} | {row['runs']} | "
                f"{'/'.join(map(str, row['exit_codes']))} | {_cell(row['wall_s'], '.0f')} | "
                f"{_cell(row['rtf'], '.3f')} | {_cell(row['peak_rss_mib'], '.0f')} | "
                f"{'/'.join(map(str, row['ctm_words']))}"
                + ("" if not same else f" (same words and times as streamed in {sum(same)} of {len(same)})")
                + " |"
            )
        ratio = r["rss_ratio_longest_to_shortest"]
        lines += [
            "",
            f"Peak RSS, longest / shortest streamed file, per round: "
            f"{', '.join(f'{v:.3f}' for v in ratio['values'])} (median {ratio['median']:.3f})",
            "",
        ]
    if "model_load" in results:
        r = results["model_load"]
        lines += [
            f"## Loading a model directory ({r['parameters']:,} parameters)",
            "",
            "| loader | seconds, median (range) |",
            "|---|---|",
        ]
        lines += [f"| {row['loader']} | {_cell(row['seconds'], '.3f')} |" for row in r["rows"]]
        lines += ["", f"checked / unchecked: {r['checked_over_unchecked']:.3f}", ""]
    return "\n".join(lines) + "\n"


def _rate(files_per_s: float | None) -> str:
    return "-" if files_per_s is None else f"{files_per_s:.1f}"


def _cell(figure: dict, fmt: str) -> str:
    if figure["min"] == figure["max"]:
        return format(figure["median"], fmt)
    return f"{figure['median']:{fmt}} ({figure['min']:{fmt}}-{figure['max']:{fmt}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", default=["many-files", "long-audio"])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--hours", type=float, nargs="+", default=[0.25, 2.0])
    parser.add_argument(
        "--one-pass-hours",
        type=float,
        nargs="*",
        default=None,
        help="lengths also transcribed in one pass (default: the shortest)",
    )
    parser.add_argument("--runs", type=int, default=1, help="repeats of each experiment; the tables give medians")
    parser.add_argument("--stream-seconds", type=float, default=600.0, help="transcribe's --stream-seconds")
    parser.add_argument("--quick", action="store_true", help="200 files and 1-2 minutes of audio (a smoke run)")
    parser.add_argument("--load-reps", type=int, default=5, help="model-load: timed loads per loader")
    parser.add_argument("--out-dir", default="bench_out/reliability")
    args = parser.parse_args()
    if args.quick:
        args.files, args.hours, args.stream_seconds = 200, [1 / 60, 2 / 60], 30.0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for experiment in args.experiments:
            workdir = Path(tmp) / experiment
            workdir.mkdir()
            if experiment == "many-files":
                results["many_files"] = many_files(args, workdir)
            elif experiment == "long-audio":
                results["long_audio"] = long_audio(args, workdir)
            elif experiment == "model-load":
                results["model_load"] = model_load(args, workdir)
            else:
                sys.exit(f"unknown experiment {experiment!r}")
    info = meta(sys.argv, os.cpu_count() or 1, 1)
    write_outputs(args.out_dir, {"meta": info, **results}, markdown(results, info))


if __name__ == "__main__":
    main()
