#!/usr/bin/env python
"""RESULTS.md of an LM recipe: per model, training summary and every eval-lm report it has.

Run: python local/lm_results.py --exp exp --out exp/RESULTS.md --title "..." --command "./run.sh ..."

Reads exp/<model>/train.log (JSON lines written by train-lm), exp/<model>/eval/*.json (`seqattn eval-lm
--json` reports) and exp/<model>/sample.txt (a generated sample), and exp/time/* (stage timings). Models named
<variant>_seed<N> (several seeds of one variant) also get a table of medians and ranges over their seeds.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

from seqattn.utils.machine import machine_line


def training_summary(log: Path) -> dict:
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    train = [r for r in rows if r["prefix"] == "train"]
    valid = [r for r in rows if r["prefix"] == "valid"]
    return {"updates": max((r["update"] for r in rows), default=0),
            "train_loss": train[-1]["loss"] if train else None,
            "tokens_per_s": train[-1]["tokens_per_s"] if train else None,
            "best_valid_loss": min((r["loss"] for r in valid), default=None)}


def seed_table(rows: list[tuple[str, dict, dict]]) -> list[str]:
    """Median [min, max] over seeds per variant, from (model name, training summary, {scheme: loss})."""
    groups: dict[str, list[tuple[dict, dict]]] = {}
    for name, summary, losses in rows:
        match = re.fullmatch(r"(.+)_seed(\d+)", name)
        if match:
            groups.setdefault(match.group(1), []).append((summary, losses))
    if not groups:
        return []

    def spread(values):
        values = [v for v in values if v is not None]
        if not values:
            return "—"
        return f"{statistics.median(values):.4f} [{min(values):.4f}, {max(values):.4f}]"

    schemes = sorted({scheme for entries in groups.values() for _, losses in entries for scheme in losses})
    lines = ["", "## Over seeds (median [min, max])", "",
             "| variant | seeds | best valid loss | " + " | ".join(f"loss, {s}" for s in schemes)
             + " | train tokens/s |", "|---|---|---|" + "---|" * len(schemes) + "---|"]
    for variant, entries in groups.items():
        speed = [e[0]["tokens_per_s"] for e in entries if e[0]["tokens_per_s"]]
        speed_cell = f"{statistics.median(speed):.0f}" if speed else "—"
        lines.append(f"| {variant} | {len(entries)} | {spread([e[0]['best_valid_loss'] for e in entries])} | "
                     + " | ".join(spread([e[1].get(s) for e in entries]) for s in schemes) + f" | {speed_cell} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", default="exp")
    parser.add_argument("--out", default="exp/RESULTS.md")
    parser.add_argument("--title", default="Language-model results")
    parser.add_argument("--command", default="./run.sh")
    args = parser.parse_args()
    exp = Path(args.exp)
    lines = [f"# {args.title}", "", f"- command: `{args.command}`", f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
             f"- machine: {machine_line()}", "",
             "## Perplexity (`seqattn eval-lm`)", "",
             "| model | updates | best valid loss | eval file | scheme | tokens | loss (nats/token) | token ppl | "
             "word ppl | bits/byte |", "|---|---|---|---|---|---|---|---|---|---|"]
    samples, per_model = [], []
    for model in sorted(p for p in exp.iterdir() if (p / "train.log").is_file()):
        summary = training_summary(model / "train.log")
        losses = {}
        per_model.append((model.name, summary, losses))
        for report_path in sorted((model / "eval").glob("*.json")):
            report = json.loads(report_path.read_text())
            for entry in report["files"]:
                if entry.get("error"):
                    continue
                scheme = report["scheme"] if report["scheme"] == "blocks" else \
                    f"sliding {report['context']}/{report['stride']}"
                if report["scheme"] == "blocks":
                    scheme = f"blocks of {report['context']}"
                losses[scheme] = entry["loss"]
                best = "—" if summary["best_valid_loss"] is None else f"{summary['best_valid_loss']:.4f}"
                lines.append(
                    f"| {model.name} | {summary['updates']} | {best} | {Path(entry['name']).name} | {scheme} | "
                    f"{entry['tokens']} | {entry['loss']:.4f} | {entry['token_ppl']:.3f} | {entry['word_ppl']:.2f} | "
                    f"{entry['bits_per_byte']:.4f} |")
        if (model / "sample.txt").is_file():
            samples.append((model.name, (model / "sample.txt").read_text(encoding="utf-8")[:600]))
    lines += seed_table(per_model)
    timing = [p.read_text().strip().split("\t") for p in sorted((exp / "time").glob("[0-9]*"))] \
        if (exp / "time").is_dir() else []
    if timing:
        lines += ["", "## Time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {stage} | {float(seconds):.0f} |" for stage, seconds in timing]
    for name, text in samples:
        lines += ["", f"## Sample from {name}", "", "```", text.rstrip(), "```"]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
