"""Turn a full-attention wav2vec2 model into a local-attention one (the CLEAR recipe applied to speech).

Each full-attention layer becomes a local layer whose +-w window is the smallest that holds the requested
share of attention mass for every one of its heads, as measured by :mod:`.attention` on real audio. The
softmax is unchanged (it is simply taken over the window), and the weights are reused as they are; an
optional distillation of the attention projections (:mod:`seqattn.train.distill`) then recovers what the
cut-off mass changed.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from seqattn.analysis.attention import AttentionAnalysis, backbone_of
from seqattn.errors import SeqattnError
from seqattn.models.wav2vec2 import Wav2Vec2Config
from seqattn.models.wav2vec2.longform import encode, inference_features
from seqattn.nn import LocalHeads
from seqattn.nn.heads.local import local_keys_per_query
from seqattn.train.distill import DistillConfig


class LocalizeError(SeqattnError, ValueError):
    """The model or the analysis cannot be localized as asked."""


# A head is split off into a narrower kernel call only when that removes at least this share of the keys
# each of its query blocks multiplies: every extra call copies its heads' q, k and v, which a few percent of
# keys do not pay for (narrowing +-64 heads to +-55..61 in four calls made the demo's encoder 0.74x as fast).
MIN_SPLIT_SAVING = 0.25


def _keys_per_query(window: int) -> int:
    """What a +-window local head costs per query (the head kind's own cost model)."""
    return local_keys_per_query(window, window)


def group_head_windows(windows: list[int], min_saving: float = MIN_SPLIT_SAVING) -> list[int]:
    """Per-head windows coarsened so that heads share a kernel call unless a narrower call saves work: from
    the widest down, a head joins the current group (taking its window) when it would save less than
    ``min_saving`` of the group's keys per query, and opens a new group otherwise."""
    grouped, group = {}, None
    for head in sorted(range(len(windows)), key=lambda h: -windows[h]):
        if group is None or _keys_per_query(windows[head]) <= (1 - min_saving) * _keys_per_query(group):
            group = windows[head]
        grouped[head] = group
    return [grouped[h] for h in range(len(windows))]


@dataclass
class LayerWindow:
    layer: int
    window: int  # +-w in frames the layer needs for the coverage (after rounding)
    head_windows: list[int]  # each head's own smallest window for the coverage
    window_left: int  # the layer's window after conversion (the widest head's, with per-head windows)
    window_right: int
    converted: bool  # False for a local layer whose window was already no wider
    head_pairs: list[tuple[int, int]] | None = None  # per-head (left, right) windows, when chosen per head


def choose_windows(config: Wav2Vec2Config, analysis: AttentionAnalysis, coverage: float, *, multiple: int = 1,
                   min_window: int = 1, per_head: bool = False) -> list[LayerWindow]:
    """Per layer, the window covering ``coverage`` of the mass for every head (the largest head's need),
    rounded up to a multiple of ``multiple`` frames and at least ``min_window``; with ``per_head`` each head
    gets its own such window instead (the banded kernel's cost follows each head's window, so narrow heads cost
    less), coarsened by :func:`group_head_windows` so that a head is split off into its own kernel call only
    where that saves a quarter of its keys.

    Full-attention layers become local with that window; local layers are narrowed to it when it is
    smaller than the window they were trained with (never widened). Layers mixing kinds are refused.
    """
    if not 0 < coverage <= 1:
        raise LocalizeError(f"coverage must be in (0, 1], got {coverage}")
    windows = []
    for layer in range(config.num_layers):
        attention = config.attention_for(layer)
        if attention.num_heads not in (attention.full_heads, attention.local.heads):
            raise LocalizeError(
                f"layer {layer} mixes head kinds ({attention.local.heads} local, {attention.full_heads} "
                f"full of {attention.num_heads}); localize converts layers whose heads are all full "
                "or all local"
            )
        heads = [s for s in analysis.heads if s.layer == layer]
        if len(heads) != attention.num_heads:
            raise LocalizeError(
                f"the analysis has {len(heads)} heads for layer {layer}, the model {attention.num_heads}: "
                "was it made for another model?"
            )
        need = []
        for s in heads:
            if coverage not in s.coverage_windows:
                known = ", ".join(str(c) for c in sorted(s.coverage_windows))
                raise LocalizeError(
                    f"the analysis holds windows for coverages {known}, not {coverage}: run it "
                    "again with this coverage (or pass --data so localize measures it)"
                )
            need.append(int(s.coverage_windows[coverage]))
        rounded = [multiple * math.ceil(max(min_window, n) / multiple) for n in need]
        window = max(rounded)
        if per_head:
            rounded = group_head_windows(rounded)
        if attention.full_heads:
            pairs = [(w, w) for w in rounded] if per_head else None
            widest = max(rounded) if per_head else window
            windows.append(LayerWindow(layer, window, need, widest, widest, converted=True, head_pairs=pairs))
        elif per_head:
            lefts, rights = attention.local.head_windows()
            pairs = [(min(left, w), min(right, w)) for left, right, w in zip(lefts, rights, rounded)]
            narrowed = pairs != list(zip(lefts, rights))
            windows.append(
                LayerWindow(
                    layer,
                    window,
                    need,
                    max(p[0] for p in pairs),
                    max(p[1] for p in pairs),
                    converted=narrowed,
                    head_pairs=pairs,
                )
            )
        else:
            lefts, rights = attention.local.head_windows()
            left, right = min(max(lefts), window), min(max(rights), window)
            narrowed = (left, right) != (max(lefts), max(rights)) or attention.local.windows is not None
            windows.append(LayerWindow(layer, window, need, left, right, converted=narrowed))
    return windows


def localized_config(config: Wav2Vec2Config, windows: list[LayerWindow]) -> Wav2Vec2Config:
    """A copy of ``config`` whose converted layers have all heads local with their window."""
    new = copy.deepcopy(config)
    layers = []
    for choice in windows:
        attention = copy.deepcopy(config.attention_for(choice.layer))
        if choice.converted:
            attention.local = LocalHeads(
                heads=attention.num_heads,
                window_left=choice.window_left,
                window_right=choice.window_right,
                windows=[list(p) for p in choice.head_pairs] if choice.head_pairs else None,
            )
        layers.append(attention)
    new.layer_attention = layers
    new.validate()
    return new


def localize_model(model: torch.nn.Module, windows: list[LayerWindow]) -> torch.nn.Module:
    """The same weights in a model whose layers use the chosen windows (eval mode)."""
    config = localized_config(model.config, windows)
    local = type(model)(config)
    local.load_state_dict(model.state_dict(), strict=True)  # attention kinds own no parameters of their own
    return local.eval()


@torch.no_grad()
def encoder_seconds(model: torch.nn.Module, seconds: float, reps: int = 3, seed: int = 0) -> dict:
    """Median wall times on one random input of ``seconds`` seconds: the transformer encoder alone (what
    localizing changes) and the whole backbone (CNN + encoder, what a user waits for)."""
    wave = torch.randn(int(seconds * 16000), generator=torch.Generator().manual_seed(seed))
    backbone = backbone_of(model)
    encoder, total = [], []
    for _ in range(reps + 1):  # the first run warms allocator and kernels and is not counted
        start = time.perf_counter()
        features = inference_features(backbone, [wave])
        middle = time.perf_counter()
        encode(backbone, features)
        end = time.perf_counter()
        encoder.append(end - middle)
        total.append(end - start)
    return {"encoder_s": statistics.median(encoder[1:]), "total_s": statistics.median(total[1:])}


def _copy_tokenizer_files(model_dir: Path) -> dict:
    """Every file of the source model directory except its weights, config and README (tokens.json, ...)."""
    from seqattn.models.io import CONFIG_FILE, README_FILE, WEIGHTS_FILE

    skip = {CONFIG_FILE, WEIGHTS_FILE, README_FILE, "localize.json"}
    return {p.name: p for p in sorted(model_dir.iterdir()) if p.is_file() and p.name not in skip}


def labelled_items(test_dirs: list[str]):
    """The utterances with transcripts in labelled data dirs or manifests, and the inputs that failed."""
    from seqattn.analysis.inputs import gather_items

    items, failures = gather_items(test_dirs)
    items = [item for item in items if item.reference is not None]
    if not items:
        raise LocalizeError(f"--test {' '.join(test_dirs)} holds no utterances with transcripts")
    return items, failures


def test_error_rates(model, vocab, items, failures, progress: bool) -> dict:
    """Greedy %WER/%CER of a CTC model on labelled utterances (numbers; the Kaldi lines are formatted from them)."""
    from seqattn.decode.transcribe import error_counts, transcribe

    result = transcribe(model, vocab, items, timestamps=False, batch_size=4, progress=progress)
    pairs = [(result.references[t.utt_id], t.text) for t in result.transcripts if t.utt_id in result.references]
    words, chars, _ = error_counts([p[0] for p in pairs], [p[1] for p in pairs])
    return {
        "wer_line": words.kaldi_line("WER"),
        "cer_line": chars.kaldi_line("CER"),
        "wer": words.rate,
        "cer": chars.rate,
        "utterances": len(pairs),
        "failed": len(failures) + len(result.failures),
    }


def measured_analysis(
    teacher, *, data, analysis_json, coverage: float, max_utterances: int, max_seconds: float, progress: bool
) -> AttentionAnalysis:
    """Stage 1: the attention analysis, read from ``analysis_json`` or measured on the audio of ``data``."""
    import json

    from seqattn.analysis.attention import analyze_attention
    from seqattn.analysis.inputs import load_inputs

    if analysis_json:
        return AttentionAnalysis.from_json(json.loads(Path(analysis_json).read_text()))
    if not data:
        raise LocalizeError(
            "give --data (audio to measure the attention on) or --analysis (an attention.json "
            "written by `seqattn analyze attention`)"
        )
    inputs = load_inputs(
        data,
        max_utterances=max_utterances,
        max_seconds=max_seconds,
        normalize=teacher.config.normalize_waveform,
        min_samples=backbone_of(teacher).feature_extractor.receptive_field()[0],
    )
    return analyze_attention(teacher, [u.wave for u in inputs.utterances], coverages=(coverage,), progress=progress)


def distillation_stage(
    student, teacher, distill_data: list[str], layers: list[int], distill: DistillConfig, progress: bool
) -> dict:
    """Stage 3 (optional): distil the converted layers' attention projections; the outcome as numbers."""
    from seqattn.analysis.inputs import load_inputs
    from seqattn.train.distill import distill_attention

    waves = [
        u.wave
        for u in load_inputs(
            distill_data,
            normalize=teacher.config.normalize_waveform,
            min_samples=backbone_of(teacher).feature_extractor.receptive_field()[0],
        ).utterances
    ]
    outcome = distill_attention(backbone_of(student), backbone_of(teacher), waves, layers, distill, progress)
    student.eval()
    return {
        "steps": distill.steps,
        "lr": distill.lr,
        "batch_size": distill.batch_size,
        "crop_seconds": distill.crop_seconds,
        "trained_parameters": outcome.trained_parameters,
        "held_out_loss_before": outcome.held_out_before,
        "held_out_loss_after": outcome.held_out_after,
        "first_loss": outcome.losses[0],
        "last_loss": outcome.losses[-1],
    }


def speed_stage(teacher, student, seconds: float, reps: int) -> dict:
    """Stage 4 (optional): encoder and total seconds of both models on one long input."""
    before, after = encoder_seconds(teacher, seconds, reps), encoder_seconds(student, seconds, reps)
    return {
        "input_seconds": seconds,
        "reps": reps,
        "before_encoder_s": before["encoder_s"],
        "after_encoder_s": after["encoder_s"],
        "encoder_speedup": before["encoder_s"] / after["encoder_s"],
        "before_total_s": before["total_s"],
        "after_total_s": after["total_s"],
        "total_speedup": before["total_s"] / after["total_s"],
    }


def scoring_stage(teacher, student, source: Path, test: list[str], progress: bool) -> dict:
    """Stage 5 (optional): greedy error rates of both models on a labelled test set, and their change."""
    if not hasattr(teacher, "head"):
        raise LocalizeError("--test needs a CTC model (model_type wav2vec2_ctc) to transcribe with")
    from seqattn.data.vocabulary import VOCAB_FILE, load_vocabulary

    vocab = load_vocabulary(source / VOCAB_FILE)
    items, failures = labelled_items(test)
    before = test_error_rates(teacher, vocab, items, failures, progress)
    after = test_error_rates(student, vocab, items, failures, progress)
    return {
        "before": before,
        "after": after,
        "cer_change": after["cer"] - before["cer"],
        "wer_change": after["wer"] - before["wer"],
    }


def window_notes(windows: list[LayerWindow], coverage: float, frame_ms: float) -> str:
    """The model card's account of the chosen windows (formatting only)."""
    return f"## Localized (coverage {coverage})\n\n" + "\n".join(
        f"- layer {w.layer}: -{w.window_left}/+{w.window_right} frames ({w.window_left * frame_ms:g} ms left)"
        + (f", per head {' '.join(f'-{a}/+{b}' for a, b in w.head_pairs)}" if w.head_pairs else "")
        + ("" if w.converted else " (unchanged)")
        for w in windows
    )


def run_localize(model_dir: str, out_dir: str, *, coverage: float = 0.95, data: list[str] | None = None,
                 analysis_json: str | None = None, max_utterances: int = 64, max_seconds: float = 30.0,
                 multiple: int = 1, per_head: bool = False, distill_data: list[str] | None = None,
                 distill: DistillConfig | None = None, test: list[str] | None = None, bench_seconds: float = 60.0,
                 bench_reps: int = 3, command: str = "seqattn convert localize", progress: bool = True,
                 device: str = "auto") -> dict:
    """The whole of ``seqattn convert localize``: measure (or read) the attention, choose windows, convert,
    optionally distil, time both models on a long input, score both on a test set, write OUT_DIR. Returns the
    report (numbers) that localize.json holds."""
    import json

    from seqattn.models.io import load_model, save_model
    from seqattn.utils.device import resolve_device

    source = Path(model_dir)
    teacher = load_model(source, resolve_device(device))
    analysis = measured_analysis(
        teacher,
        data=data,
        analysis_json=analysis_json,
        coverage=coverage,
        max_utterances=max_utterances,
        max_seconds=max_seconds,
        progress=progress,
    )
    windows = choose_windows(teacher.config, analysis, coverage, multiple=multiple, per_head=per_head)
    converted = [w.layer for w in windows if w.converted]
    if not converted:
        raise LocalizeError(
            f"nothing to localize in {model_dir}: every layer is local already with a window no "
            f"wider than the {coverage} coverage needs"
        )
    student = localize_model(teacher, windows)
    report = {
        "source": str(source),
        "coverage": coverage,
        "analysis": {
            "utterances": analysis.utterances,
            "seconds": round(analysis.seconds, 2),
            "from": analysis_json or data,
        },
        "windows": [
            {
                "layer": w.layer,
                "needed": w.window,
                "head_windows": w.head_windows,
                "window_left": w.window_left,
                "window_right": w.window_right,
                "converted": w.converted,
                "head_pairs": [list(p) for p in w.head_pairs] if w.head_pairs else None,
            }
            for w in windows
        ],
        "frame_ms": analysis.frame_ms,
    }
    if distill_data:
        report["distillation"] = distillation_stage(
            student, teacher, distill_data, converted, distill or DistillConfig(), progress
        )
    if bench_seconds > 0:
        report["speed"] = speed_stage(teacher, student, bench_seconds, bench_reps)
    if test:
        report["test"] = scoring_stage(teacher, student, source, test, progress)
    files = _copy_tokenizer_files(source)
    files["localize.json"] = json.dumps(report, indent=1) + "\n"
    save_model(
        student, out_dir, extra_files=files, command=command, notes=window_notes(windows, coverage, analysis.frame_ms)
    )
    return report
