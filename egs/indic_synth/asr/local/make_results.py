#!/usr/bin/env python
"""Collect the decoding results of the recipe into RESULTS.md (Kaldi's RESULTS convention, as a table).

Run: python local/make_results.py --exp exp --out RESULTS.md --command "./run.sh ..."

Reads exp/decode/<model>/<mode>/<set>/wer (the %WER/%CER lines `seqattn transcribe` writes), the one-pass
long-recording score (exp/longform/*/wer), the stage timings in exp/time/, and the LM settings chosen on dev
(exp/decode/<model>/lm/chosen.txt).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import time
from pathlib import Path

LINE = re.compile(r"%(WER|CER) ([\d.]+) \[ (\d+) / (\d+),")
MODEL_NAMES = {"ft": "pretrained + fine-tuned", "ft_scratch": "fine-tuned from scratch (no pretraining)"}


def read_scores(path: Path) -> dict[str, tuple[float, int, int]]:
    scores = {}
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        if match:
            scores[match.group(1)] = (float(match.group(2)), int(match.group(3)), int(match.group(4)))
    return scores


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", default="exp")
    parser.add_argument("--out", default="RESULTS.md")
    parser.add_argument("--command", default="./run.sh")
    args = parser.parse_args()

    exp = Path(args.exp)
    results: dict[tuple[str, str], dict[str, dict]] = {}  # (model, mode) -> set -> scores
    for wer in sorted(exp.glob("decode/*/*/*/wer")):
        set_name, mode, model = wer.parent.name, wer.parent.parent.name, wer.parent.parent.parent.name
        results.setdefault((model, mode), {})[set_name] = read_scores(wer)
    # exp/time/NN holds "<stage number> <name>\t<seconds>" for every stage that ran
    timing = [path.read_text().strip().split("\t") for path in sorted((exp / "time").glob("[0-9]*"))]

    lines = [
        "# Results: multilingual Indic ASR on synthetic espeak-ng speech",
        "",
        f"- command: `{args.command}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- machine: {cpu_name()}, {os.cpu_count()} cores, CPU only",
        "- data: espeak-ng speech of CLDR word sequences; dev/test use sentences and speaker settings (voice "
        "variants m5, m6, f4, f5) never seen in training",
        "- scoring: `seqattn transcribe` with references (jiwer), Kaldi-style %WER / %CER, totals over each set",
        "",
    ]
    sets = sorted({s for per_set in results.values() for s in per_set},
                  key=lambda s: (s.split("_")[-1], s))
    if results:
        columns = sorted(results, key=lambda k: (k[0] != "ft", k[0], k[1] != "greedy", k[1]))
        lines += ["## %CER (%WER) per set", "",
                  "| set | " + " | ".join(f"{MODEL_NAMES.get(m, m)}, {mode}" for m, mode in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        for set_name in sets:
            cells = []
            for column in columns:
                scores = results[column].get(set_name)
                cells.append(f"{scores['CER'][0]:.2f} ({scores['WER'][0]:.2f})" if scores and "CER" in scores else "—")
            lines.append(f"| {set_name} | " + " | ".join(cells) + " |")
        lines.append("")
    for wer in sorted(exp.glob("longform/*/wer")):
        scores = read_scores(wer)
        lines.append(f"- long recording ({wer.parent.name.replace('_', ' ')}, one file, greedy): "
                     f"%CER {scores['CER'][0]:.2f}, %WER {scores['WER'][0]:.2f} against the segments' references "
                     "in time order; CTM/SRT/VTT/JSON in `exp/longform/`")
    for chosen in sorted(exp.glob("decode/*/lm/chosen.txt")):
        lines.append(f"- LM settings chosen on dev for {MODEL_NAMES.get(chosen.parent.parent.name, chosen.parent.parent.name)}: "
                     f"{chosen.read_text().strip()}")
    if timing:
        total = sum(float(seconds) for _, seconds in timing)
        lines += ["", "## Time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {stage} | {float(seconds):.0f} |" for stage, seconds in timing]
        lines += [f"| total | {total:.0f} ({total / 60:.1f} min) |", ""]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
