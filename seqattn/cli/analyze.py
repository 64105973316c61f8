"""``seqattn analyze {attention,codebook,layers}`` and ``seqattn convert localize``: thin wrappers over
:mod:`seqattn.analysis`."""
from __future__ import annotations

import argparse
import sys

from .options import add_device_argument, command_line


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad or not formats:
        raise argparse.ArgumentTypeError(f"plot formats are png, svg, pdf; got {text!r}")
    return formats


def _heads(text: str) -> list[tuple[int, int]]:
    try:
        return [tuple(int(x) for x in item.split(":")) for item in text.split(",") if item]
    except ValueError:
        raise argparse.ArgumentTypeError(f"heads are LAYER:HEAD pairs separated by commas, got {text!r}") from None


def _load(args, normalize_from):
    from seqattn.analysis.attention import backbone_of
    from seqattn.analysis.inputs import load_inputs

    inputs = load_inputs(args.data, max_utterances=args.max_utterances, max_seconds=args.max_seconds,
                         per_language=args.per_language,
                         normalize=normalize_from.config.normalize_waveform, seed=args.seed,
                         min_samples=backbone_of(normalize_from).feature_extractor.receptive_field()[0])
    for failure in inputs.failures:
        print(f"  skipped {failure.name}: {failure.reason}", file=sys.stderr)
    return inputs


def _summary(args, inputs) -> dict:
    return {"model": args.model_dir, "data": args.data, "command": command_line(),
            "failures": [{"input": f.name, "reason": f.reason} for f in inputs.failures]}


def _attention(args) -> int:
    from seqattn.utils.extras import require_analysis

    require_analysis("seqattn analyze")
    import torch

    from seqattn.analysis.attention import analyze_attention, write_attention_outputs
    from seqattn.models.io import load_model
    from seqattn.utils.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    from seqattn.models.lm import TransformerLM

    model = load_model(args.model_dir, resolve_device(args.device))
    if isinstance(model, TransformerLM):
        analysis, extra = _lm_attention(args, model)
    else:
        inputs = _load(args, model)
        analysis = analyze_attention(model, [u.wave for u in inputs.utterances],
                                     utt_ids=[u.utt_id for u in inputs.utterances], batch_size=args.batch_size,
                                     map_frames=args.map_frames, progress=not args.quiet)
        extra = _summary(args, inputs)
        print(f"{len(inputs.utterances)} utterances ({inputs.seconds:.1f} s), {len(inputs.failures)} skipped")
    write_attention_outputs(analysis, args.out_dir, formats=args.plot_format, example_heads=args.heads, extra=extra)
    print(f"layer  mean distance ({analysis.unit})  max w95  mass in +-8")
    for row in analysis.to_json()["layers"]:
        print(
            f"{row['layer']:5d}  {row['mean_distance_frames']:22.2f}  {row['max_w95']:7d}  "
            f"{row['mass_within'].get('8', float('nan')):.3f}"
        )
    print(f"wrote {args.out_dir}/attention.json, attention.csv and plots")
    return 0


def _lm_attention(args, model):
    """Text files -> token windows of --context tokens (<bos> + the text) -> attention statistics."""
    import torch

    from seqattn.analysis.attention import analyze_lm_attention
    from seqattn.analysis.inputs import AnalysisInputError
    from seqattn.data.lm_tokenizers import load_tokenizer
    from seqattn.evaluate.perplexity import text_chunks

    tokenizer = load_tokenizer(args.model_dir)
    context = args.context or model.config.max_context
    limit = args.max_utterances or 64
    windows, failures = [], []
    for path in args.data:
        ids = [tokenizer.bos_id]
        try:
            for text in text_chunks(path):
                ids.extend(tokenizer.encode(text))
                if len(ids) >= context * limit:
                    break
        except ValueError as error:  # not a file, not UTF-8
            failures.append({"input": path, "reason": str(error)})
            print(f"  skipped {path}: {error}", file=sys.stderr)
            continue
        for start in range(0, len(ids) - 1, context):
            if len(windows) < limit and len(ids) - start >= 2:
                windows.append(torch.tensor(ids[start : start + context]))
    if not windows:
        raise AnalysisInputError(f"no text to analyse in {' '.join(args.data)}")
    analysis = analyze_lm_attention(
        model, windows, map_frames=args.map_frames, name=args.data[0], progress=not args.quiet
    )
    print(f"{len(windows)} windows of up to {context} tokens, {len(failures)} files skipped")
    return analysis, {"model": args.model_dir, "data": args.data, "command": command_line(), "failures": failures}


def _codebook(args) -> int:
    from seqattn.utils.extras import require_analysis

    require_analysis("seqattn analyze")
    from seqattn.analysis.codebook import (
        code_counts,
        compare_languages,
        require_languages,
        require_quantizer,
        write_codebook_outputs,
    )
    from seqattn.models.io import load_model
    from seqattn.utils.device import resolve_device

    model = load_model(args.model_dir, resolve_device(args.device))
    require_quantizer(model, args.model_dir)
    inputs = _load(args, model)
    per_language = require_languages(inputs.utterances, 2, "codebook analysis")
    counts = code_counts(model, inputs.utterances, progress=not args.quiet)
    analysis = compare_languages(counts, top_k=args.top_k, min_share=args.min_share, utterances=per_language)
    values = write_codebook_outputs(analysis, args.out_dir, args.plot_format, extra=_summary(args, inputs))
    print("language  utterances  code perplexity  entries used  specific")
    for lang in analysis.languages:
        row = values["per_language"][lang]
        print(
            f"{lang:8s}  {row['utterances']:10d}  {row['code_perplexity']:15.1f}  {row['entries_used']:12d}  "
            f"{len(analysis.specific[lang]):8d}"
        )
    print(f"entries used by every language: {len(analysis.shared)}")
    print(f"wrote {args.out_dir}/codebook.json and plots")
    return 0


def _layers(args) -> int:
    from seqattn.utils.extras import require_analysis

    require_analysis("seqattn analyze")
    from seqattn.analysis.codebook import require_languages
    from seqattn.analysis.inputs import AnalysisInputError
    from seqattn.analysis.layers import analyze_layers, pooled_layer_features, write_layer_outputs
    from seqattn.models.io import load_model
    from seqattn.utils.device import resolve_device

    families = {}
    for item in args.family or []:
        lang, sep, family = item.partition("=")
        if not sep:
            raise AnalysisInputError(f"--family takes LANG=FAMILY, got {item!r}")
        families[lang] = family
    model = load_model(args.model_dir, resolve_device(args.device))
    inputs = _load(args, model)
    require_languages(inputs.utterances, 2, "the language probe")
    languages = [u.language for u in inputs.utterances]
    features = pooled_layer_features(model, inputs.utterances, progress=not args.quiet)
    analysis = analyze_layers(
        features, languages, folds=args.folds, projection=args.projection, families=families, seed=args.seed
    )
    values = write_layer_outputs(analysis, args.out_dir, args.plot_format, extra=_summary(args, inputs))
    print("layer  language acc  family acc")
    for row in values["layers"]:
        print(f"{row['layer']:5d}  {row['language_accuracy']:12.3f}  {row.get('family_accuracy', float('nan')):10.3f}")
    print(f"chance: {values['chance']}; best layer for language id: {values['best_layer_language']}")
    print(f"wrote {args.out_dir}/layers.json and plots")
    return 0


def _data_options(
    p, default_utterances: int | None, default_seconds: float | None, default_per_language: int | None
) -> None:
    p.add_argument("model_dir", help="a seqattn model directory (convert fairseq/HF checkpoints first)")
    p.add_argument(
        "data",
        nargs="+",
        help="[LANG=]PATH: Kaldi data dirs, .jsonl or .tsv manifests, HF datasets "
        "(PATH?split=S), audio files or folders; "
        "LANG= sets the language of every utterance of PATH",
    )
    p.add_argument("--out-dir", required=True)
    p.add_argument("--max-utterances", type=int, default=default_utterances, help="random sample of this many")
    p.add_argument("--max-seconds", type=float, default=default_seconds, help="crop each utterance to this length")
    p.add_argument(
        "--per-language",
        type=int,
        default=default_per_language,
        help="at most this many utterances per language (a seeded random sample)",
    )
    p.add_argument("--plot-format", type=_formats, default=("png",), help="comma-separated: png,svg,pdf")
    p.add_argument("--seed", type=int, default=0)
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true")


def add_analyze_parser(commands) -> None:
    p = commands.add_parser("analyze", help="attention locality, codebook use, language separation per layer")
    kinds = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")

    q = kinds.add_parser(
        "attention",
        help="how local each head is",
        description="Per layer and head: mean attention distance (frames and ms; tokens for language models, "
        "whose DATA are text files), mass within +-w, the smallest w "
        "holding 90%/95% of the mass, entropy and self mass, averaged over the real query frames of "
        "the sampled utterances. Writes attention.json, attention.csv, heatmaps, mass-vs-window "
        "curves and example maps. Local/routed heads use banded weights (no N x N memory).",
        epilog="example: seqattn analyze attention exp/pt/final data/test_hi --out-dir exp/analysis/attention",
    )
    _data_options(q, 64, 30.0, None)
    q.add_argument("--batch-size", type=int, default=1)
    q.add_argument("--context", type=int, default=0, help="language models: tokens per window (default: max_context)")
    q.add_argument("--map-frames", type=int, default=150, help="frames shown in the example attention maps")
    q.add_argument(
        "--heads",
        type=_heads,
        help="LAYER:HEAD,... for the example maps (default: the most and "
        "least local head of the first, middle and last layer)",
    )
    q.add_argument("--threads", type=int, default=0)
    q.set_defaults(handler=_attention)

    q = kinds.add_parser(
        "codebook",
        help="quantizer entry use per language, and overlap between languages",
        description="Needs a pretraining model (with its quantizer) and the language of each utterance "
        "(utt2lang, a manifest's language field, or LANG=PATH). Writes codebook.json (per-language "
        "counts, perplexities, JSD and top-k Jaccard matrices, shared and language-specific "
        "entries, the clustering) and plots.",
        epilog="example: seqattn analyze codebook exp/pt/final data/pretrain_* --out-dir exp/analysis/codebook",
    )
    _data_options(q, None, None, 200)
    q.add_argument("--top-k", type=int, default=32, help="entries per group for the Jaccard overlap")
    q.add_argument(
        "--min-share",
        type=float,
        default=0.002,
        help="an entry counts as used by a language above this share of its frames",
    )
    q.set_defaults(handler=_codebook)

    q = kinds.add_parser(
        "layers",
        help="linear probes for language and language family per layer",
        description="Mean-pools every layer's output per utterance and scores a linear probe (logistic "
        "regression, stratified k-fold) for language id and language family (Indo-Aryan, "
        "Dravidian, ...; see seqattn/analysis/families.py) at each layer; plots the accuracies and a "
        "2-D projection of the best layer.",
        epilog="example: seqattn analyze layers exp/pt/final data/test_* --out-dir exp/analysis/layers",
    )
    _data_options(q, None, 30.0, 100)
    q.add_argument("--folds", type=int, default=5)
    q.add_argument("--projection", choices=["pca", "tsne"], default="pca")
    q.add_argument("--family", action="append", help="LANG=FAMILY for languages the table does not know")
    q.set_defaults(handler=_layers)
