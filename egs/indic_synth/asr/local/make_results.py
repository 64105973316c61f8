#!/usr/bin/env python
"""Collect the decoding results of the recipe into RESULTS.md (Kaldi's RESULTS convention, as a table).

Run: python local/make_results.py --exp exp --data data --out RESULTS.md --command "./run.sh ..."

Reads exp/decode/<model>/<mode>/<set>/wer (the %WER/%CER lines `seqattn transcribe` writes), the one-pass
long-recording score (exp/longform/*/wer), the stage timings in exp/time/, and the LM settings chosen on dev
(exp/decode/<model>/lm/chosen.txt), and the analysis stage's JSON (exp/analysis/*, exp/ft_local*/localize.json).
With --data, it also fingerprints each data dir's ``text`` (SHA-256) and names the CLDR release it came from, so
two runs can be checked to have used the same text sets.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from pathlib import Path

from seqattn.utils.machine import machine_line

LINE = re.compile(r"%(WER|CER) ([\d.]+) \[ (\d+) / (\d+),")
MODEL_NAMES = {"ft_scratch": "fine-tuned from scratch (no pretraining)",
               "ft_pretrained": "pretrained + fine-tuned (as many updates)",
               "ft_dilated": "ft with one head dilated", "ft_global": "ft with one head global"}
FT_NAMES = {"pretrained": "pretrained + fine-tuned", "scratch": "trained from scratch"}


def read_scores(path: Path) -> dict[str, tuple[float, int, int]]:
    scores = {}
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        if match:
            scores[match.group(1)] = (float(match.group(2)), int(match.group(3)), int(match.group(4)))
    return scores


def text_sets(data: Path) -> list[str]:
    """A markdown table: each data dir's utterance count and the SHA-256 of its ``text`` file."""
    try:
        import babel

        source = f"babel {babel.__version__} (CLDR {babel.core.get_cldr_version()})"
    except ImportError:
        source = "babel not importable"
    lines = ["## Text sets", "", f"Text from {source}; the same fingerprints mean the same sentences.", "",
             "| set | utterances | sha256 of text (first 16) |", "|---|---|---|"]
    for text in sorted(data.glob("*/text")):
        content = text.read_bytes()
        utterances = len(content.splitlines())
        lines.append(f"| {text.parent.name} | {utterances} | {hashlib.sha256(content).hexdigest()[:16]} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", default="exp")
    parser.add_argument("--out", default="RESULTS.md")
    parser.add_argument("--command", default="./run.sh")
    parser.add_argument("--data", help="the recipe's data root: fingerprint its text sets")
    parser.add_argument("--ft-start", choices=sorted(FT_NAMES), default="pretrained",
                        help="how the main model (ft) started: from the pretrained model or from scratch")
    args = parser.parse_args()
    model_names = {**MODEL_NAMES, "ft": FT_NAMES[args.ft_start]}

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
        f"- machine: {machine_line()}",
        "- data: espeak-ng speech of CLDR word sequences; dev/test use sentences and speaker settings (voice "
        "variants m5, m6, f4, f5) never seen in training; test_ood_* are real sentences of another source "
        "(translated Debian messages) spoken by named espeak-ng voices at pitches outside the training range",
        "- scoring: `seqattn transcribe` with references (jiwer), Kaldi-style %WER / %CER, totals over each set",
        "",
    ]
    sets = sorted({s for per_set in results.values() for s in per_set},
                  key=lambda s: (s.split("_")[-1], s))
    if results:
        columns = sorted(results, key=lambda k: (k[0] != "ft", k[0], k[1] != "greedy", k[1]))
        lines += ["## %CER (%WER) per set", "",
                  "| set | " + " | ".join(f"{model_names.get(m, m)}, {mode}" for m, mode in columns) + " |",
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
        lines.append(
            f"- LM settings chosen on dev for {model_names.get(chosen.parent.parent.name, chosen.parent.parent.name)}: "
            f"{chosen.read_text().strip()}"
        )
    lines += analysis_section(exp)
    if args.data:
        lines += [""] + text_sets(Path(args.data))
    if timing:
        total = sum(float(seconds) for _, seconds in timing)
        lines += ["", "## Time per stage", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {stage} | {float(seconds):.0f} |" for stage, seconds in timing]
        lines += [f"| total | {total:.0f} ({total / 60:.1f} min) |", ""]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


def analysis_section(exp: Path) -> list[str]:
    """Tables of the analysis stage: attention locality, layer probes, codebook use, localize."""
    analysis = exp / "analysis"
    lines: list[str] = []
    attention = {
        name: json.loads((analysis / f"attention_{name}" / "attention.json").read_text())
        for name in ("pretrain", "ft")
        if (analysis / f"attention_{name}" / "attention.json").is_file()
    }
    if attention:
        any_values = next(iter(attention.values()))
        lines += [
            "## Analysis",
            "",
            f"### Attention locality (`seqattn analyze attention`, {any_values['utterances']} test utterances, "
            f"1 frame = {any_values['frame_ms']:g} ms)",
            "",
            "| model | layer | mean distance (frames) | max w95 over heads | mass within +-8 | mass within +-32 |",
            "|---|---|---|---|---|---|",
        ]
        for name, values in attention.items():
            for row in values["layers"]:
                lines.append(
                    f"| {name} | {row['layer']} | {row['mean_distance_frames']:.1f} | {row['max_w95']} | "
                    f"{row['mass_within'].get('8', 0):.3f} | {row['mass_within'].get('32', 0):.3f} |"
                )
        lines += ["", "Figures: `exp/analysis/attention_*/{mean_distance,w95,mass_vs_window,attention_maps}.png`", ""]
    probes = {
        name: json.loads((analysis / f"layers_{name}" / "layers.json").read_text())
        for name in ("pretrain", "ft")
        if (analysis / f"layers_{name}" / "layers.json").is_file()
    }
    if probes:
        lines += [
            "### Linear probes per layer (`seqattn analyze layers`, mean-pooled, "
            f"{next(iter(probes.values()))['folds']}-fold accuracy)",
            "",
            "| model | layer | language id | language family |",
            "|---|---|---|---|",
        ]
        for name, values in probes.items():
            for row in values["layers"]:
                lines.append(
                    f"| {name} | {row['layer']} | {row['language_accuracy']:.3f} | "
                    f"{row.get('family_accuracy', float('nan')):.3f} |"
                )
            lines.append(
                f"| {name} | chance | {values['chance'].get('language', 0):.3f} | "
                f"{values['chance'].get('family', float('nan')):.3f} |"
            )
        lines += ["", "Figures: `exp/analysis/layers_*/{layer_probes,layer_projection}.png`", ""]
    codebook_file = analysis / "codebook" / "codebook.json"
    if codebook_file.is_file():
        values = json.loads(codebook_file.read_text())
        languages = values["languages"]
        jsd = values["jensen_shannon_bits"]
        pairs = sorted(
            (jsd[i][j], languages[i], languages[j]) for i in range(len(languages)) for j in range(i + 1, len(languages))
        )
        lines += [
            f"### Codebook use (`seqattn analyze codebook`, pretrained model, {len(languages)} languages, "
            f"{values['groups']} x {values['entries_per_group']} entries)",
            "",
            "| language | utterances | code perplexity | entries used | used by this language only |",
            "|---|---|---|---|---|",
        ]
        for lang in languages:
            row = values["per_language"][lang]
            lines.append(
                f"| {lang} | {row['utterances']} | {row['code_perplexity']:.1f} | {row['entries_used']} | "
                f"{values['specific_to_one'][lang]['count']} |"
            )
        lines += [
            "",
            f"- entries used by every language: {values['shared_by_all']['count']}",
            "- closest pairs (Jensen-Shannon, bits): " + ", ".join(f"{a}-{b} {d:.4f}" for d, a, b in pairs[:5]),
            "- farthest pairs: " + ", ".join(f"{a}-{b} {d:.4f}" for d, a, b in pairs[-3:]),
            "- figures: `exp/analysis/codebook/{codebook_jsd,codebook_jaccard,codebook_dendrogram}.png`",
            "",
        ]
    reports = sorted(exp.glob("ft_local*/localize.json"))
    if reports:
        lines += [
            "### `seqattn convert localize` on the fine-tuned model",
            "",
            "| output | coverage | windows (+-frames per layer) | distilled | encoder time, 60 s input | "
            "%CER test before -> after |",
            "|---|---|---|---|---|---|",
        ]
        for path in reports:
            report = json.loads(path.read_text())
            windows = " ".join(str(w["window_left"]) for w in report["windows"])
            speed = report.get("speed", {})
            test = report.get("test", {})
            distilled = f"{report['distillation']['steps']} steps" if "distillation" in report else "no"
            lines.append(
                f"| {path.parent.name} | {report['coverage']} | {windows} | {distilled} | "
                f"{speed.get('before_encoder_s', 0):.3f} -> {speed.get('after_encoder_s', 0):.3f} s "
                f"({speed.get('encoder_speedup', 0):.2f}x) | "
                f"{test.get('before', {}).get('cer', float('nan')):.2f} -> "
                f"{test.get('after', {}).get('cer', float('nan')):.2f} |"
            )
        lines.append("")
    return lines


if __name__ == "__main__":
    main()
