"""``seqattn convert`` (fairseq / HF import, HF export, localize) and ``seqattn export onnx``."""
from __future__ import annotations

from .options import add_device_argument, command_line


def _convert(args) -> int:
    from seqattn.interop import convert

    if args.source_format == "fairseq":
        out = convert.convert_fairseq(args.source, args.out_dir, args.dict)
    elif args.source_format == "hf-import":
        out = convert.hf_import(args.source, args.out_dir, language=args.language)
    else:
        out = convert.hf_export(args.source, args.out_dir)
    print(f"wrote {out}")
    return 0


def _localize(args) -> int:
    from seqattn.utils.extras import require_analysis

    require_analysis("seqattn convert localize")
    import json

    from seqattn.interop.localize import run_localize
    from seqattn.train.distill import DistillConfig

    distill = DistillConfig(
        steps=args.distill_steps,
        lr=args.distill_lr,
        batch_size=args.distill_batch,
        crop_seconds=args.distill_crop_seconds,
    )
    report = run_localize(
        args.model_dir,
        args.out_dir,
        coverage=args.coverage,
        data=args.data,
        analysis_json=args.analysis,
        max_utterances=args.max_utterances,
        max_seconds=args.max_seconds,
        multiple=args.multiple,
        per_head=args.per_head,
        distill_data=args.distill,
        distill=distill,
        test=args.test,
        bench_seconds=args.bench_seconds,
        bench_reps=args.bench_reps,
        command=command_line(),
        progress=not args.quiet,
        device=args.device,
    )
    print(
        "windows (-left/+right frames per layer): "
        + " ".join(f"-{w['window_left']}/+{w['window_right']}" for w in report["windows"])
    )
    for key in ("distillation", "speed", "test"):
        if key in report:
            print(f"{key}: {json.dumps(report[key])}")
    print(f"wrote {args.out_dir} (localize.json holds the report)")
    return 0


def _add_convert_parser(commands) -> None:
    p = commands.add_parser(
        "convert",
        help="import fairseq / HF wav2vec2 models, export to HF, localize full attention",
        description="Convert models between formats. Outputs appear complete or not at all.",
    )
    formats = p.add_subparsers(dest="source_format", required=True, metavar="FORMAT")
    q = formats.add_parser(
        "fairseq",
        help="fairseq wav2vec 2.0 checkpoint (pretraining or CTC, e.g. IndicWav2Vec) -> seqattn",
        description="Read a fairseq checkpoint without fairseq (safe loading: only the classes fairseq files "
        "contain are accepted) and write a seqattn model directory. CTC models get tokens.json from "
        "the checkpoint's target dictionary or --dict.",
        epilog="example: seqattn convert fairseq indicw2v_base_pretrained.pt exp/indicw2v_base",
    )
    q.add_argument("source", help="fairseq .pt checkpoint")
    q.add_argument("out_dir", help="seqattn model directory to write")
    q.add_argument("--dict", help="fairseq dict.ltr.txt (when the checkpoint holds no target dictionary)")
    q.set_defaults(handler=_convert)
    q = formats.add_parser(
        "hf-import",
        help="HF Wav2Vec2ForCTC / Wav2Vec2ForPreTraining directory or hub repo id -> seqattn",
        description="Import an HF wav2vec2 model: a save_pretrained directory, or a hub repo id read through "
        "huggingface_hub's cache (with HF_HUB_OFFLINE=1 only the local cache is used). Sharded weights "
        "(model.safetensors.index.json) are joined. MMS-style per-language attention adapters are not "
        "supported (a clear error); a per-language vocab.json needs --language.",
        epilog="example: HF_HUB_OFFLINE=1 seqattn convert hf-import facebook/wav2vec2-base-960h exp/w2v_960h",
    )
    q.add_argument(
        "source",
        help="HF save_pretrained directory (config.json, model.safetensors, vocab.json) or a hub repo id (org/name)",
    )
    q.add_argument("--language", help="the language whose vocabulary to take from a per-language vocab.json")
    q.add_argument("out_dir", help="seqattn model directory to write")
    q.set_defaults(handler=_convert)
    q = formats.add_parser("hf-export", help="seqattn model directory (full attention only) -> HF directory")
    q.add_argument("source", help="seqattn model directory")
    q.add_argument("out_dir", help="HF directory to write (loads with transformers' from_pretrained)")
    q.set_defaults(handler=_convert)
    _add_localize_parser(formats)


def _add_localize_parser(formats) -> None:
    q = formats.add_parser(
        "localize",
        help="full-attention model -> local-attention model with measured windows",
        description="Measure how far each head of a full-attention model attends (or read an attention.json), "
        "give each layer the +-w window holding --coverage of every head's mass, optionally distil "
        "the attention projections against the original on unlabelled audio, and report the "
        "speed-up on a long input and the WER/CER change on --test.",
        epilog="example: seqattn convert localize exp/ft/best exp/ft_local --data data/dev_hi --coverage 0.95 "
        "--distill data/pretrain_hi --test data/test_hi",
    )
    q.add_argument("model_dir")
    q.add_argument("out_dir")
    q.add_argument("--coverage", type=float, default=0.95)
    q.add_argument("--data", nargs="+", help="[LANG=]PATH audio to measure attention on")
    q.add_argument("--analysis", help="attention.json from `seqattn analyze attention` (instead of --data)")
    q.add_argument("--max-utterances", type=int, default=64)
    q.add_argument("--max-seconds", type=float, default=30.0)
    q.add_argument("--multiple", type=int, default=1, help="round windows up to a multiple of this many frames")
    q.add_argument(
        "--per-head",
        action="store_true",
        help="give every head its own window (its own coverage need) instead of the layer's widest; "
        "narrow heads then run with their own blocking and cost less",
    )
    q.add_argument("--distill", nargs="+", help="[LANG=]PATH unlabelled audio to distil the attention layers on")
    q.add_argument("--distill-steps", type=int, default=200)
    q.add_argument("--distill-lr", type=float, default=2e-4)
    q.add_argument("--distill-batch", type=int, default=4)
    q.add_argument("--distill-crop-seconds", type=float, default=8.0)
    q.add_argument("--test", nargs="+", help="labelled data dirs/manifests: greedy WER/CER before and after")
    q.add_argument("--bench-seconds", type=float, default=60.0, help="length of the timed input (0: no timing)")
    q.add_argument("--bench-reps", type=int, default=3)
    add_device_argument(q)
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(handler=_localize)


def _export(args) -> int:
    from seqattn.interop.onnx import export_onnx

    report = export_onnx(args.model_dir, args.out, opset=args.opset)
    print(f"wrote {report.path} ({report.size_bytes / 2**20:.1f} MiB) in {report.seconds:.1f} s; checked with "
          f"onnxruntime on inputs of {', '.join(str(n) for n in report.checked_samples)} samples: max |logit "
          f"difference| {report.max_difference:.2e}")
    return 0


def _add_export_parser(commands) -> None:
    p = commands.add_parser(
        "export",
        help="export a CTC model to ONNX",
        description="Export a model for other runtimes.",
    )
    formats = p.add_subparsers(dest="target_format", required=True, metavar="FORMAT")
    q = formats.add_parser(
        "onnx",
        help="CTC model directory -> .onnx (dynamic batch and length)",
        description="Export a CTC model (full, local, dilated, global, shifted-window and pooled heads; not routed "
        "heads) to ONNX "
        "with dynamic batch and length. The model's config and vocabulary travel in the file's "
        "metadata, so `seqattn transcribe OUT.onnx` needs nothing else. The export is checked with "
        "onnxruntime against PyTorch (logits within 1e-4) before the file is written.",
        epilog="example: seqattn export onnx exp/ft/best exp/ft/model.onnx && "
        "seqattn transcribe exp/ft/model.onnx talk.wav",
    )
    q.add_argument("model_dir", help="a seqattn CTC model directory")
    q.add_argument("out", help="the .onnx file to write")
    q.add_argument("--opset", type=int, default=18, help="ONNX opset version")
    q.set_defaults(handler=_export)


def add_convert_parsers(commands) -> None:
    _add_convert_parser(commands)
    _add_export_parser(commands)
