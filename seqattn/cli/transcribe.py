"""``seqattn transcribe``: argument checks and printing; the decoding itself is :mod:`seqattn.decode`."""
from __future__ import annotations

import sys
from pathlib import Path

from .options import add_device_argument


def _transcribe(args) -> int:
    import torch

    from seqattn.decode.recognizer import open_recognizer
    from seqattn.decode.sets import decode_data_dirs, set_names
    from seqattn.decode.transcribe import Beam, collect_inputs

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.inputs and not args.data_dir and not args.manifest:
        print("seqattn transcribe: error: give audio files/directories, --data-dir or --manifest", file=sys.stderr)
        return 2
    if args.lm and not args.lexicon:
        print("seqattn transcribe: error: --lm needs --lexicon: a word LM scores words, and the lexicon says how "
              "the model's tokens spell them (seqattn build-lm writes both); without --lm, beam search is "
              "lexicon-free", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"seqattn transcribe: error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    data_dirs = args.data_dir or []
    names = set_names(data_dirs)
    if len(data_dirs) > 1 and (args.inputs or args.manifest or len(set(names)) < len(names)):
        print("seqattn transcribe: error: several --data-dir are decoded each into OUTPUT_DIR/<its name>: give "
              "no other inputs, and data dirs with different names", file=sys.stderr)
        return 2
    model, vocab = open_recognizer(args.model_dir, args.backend, args.device, args.threads)
    beam = None
    if args.beam_size > 1 or args.lm or args.lexicon:
        beam = Beam(vocab, max(args.beam_size, 1), args.lm, args.lexicon, args.lm_weight, args.word_score,
                    args.sil_score)

    def decode(items, failures, out: Path) -> int:
        return _transcribe_job(args, model, vocab, beam, items, failures, out)

    if len(data_dirs) <= 1:  # one job: everything given, written to --output-dir
        items, failures = collect_inputs(args.inputs, data_dirs[0] if data_dirs else None, args.manifest)
        return decode(items, failures, Path(args.output_dir))
    return decode_data_dirs(data_dirs, args.output_dir, decode)


def _transcribe_job(args, model, vocab, beam, items, failures, out) -> int:
    """Transcribe ``items`` into the decode dir ``out``, print the summary (and %WER/%CER with references);
    1 when an input failed."""
    from seqattn.decode.decode_dir import write_decode_dir
    from seqattn.decode.transcribe import transcribe
    from seqattn.decode.writers import FORMATS

    if args.language:
        for item in items:
            item.language = item.language or args.language
    chunk = None if args.chunk_seconds is None else args.chunk_seconds
    result = transcribe(model, vocab, items, chunk_seconds=chunk, beam=beam, batch_size=args.batch_size,
                        allow_pipes=not args.no_pipes, pipe_timeout=args.pipe_timeout, progress=not args.quiet,
                        stream_seconds=args.stream_seconds)
    result.failures = failures + result.failures
    formats = FORMATS if args.output_format == "all" else (args.output_format,)
    wer, cer = write_decode_dir(result, out, formats)
    if not args.quiet:
        for transcript in result.transcripts:
            print(f"{transcript.utt_id}\t{transcript.text}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    hours = result.audio_seconds / 3600
    print(f"transcribed {len(result.transcripts)} of {len(result.transcripts) + len(result.failures)} inputs: "
          f"{hours:.3f} h of audio in {result.wall_seconds:.1f} s, RTF {result.rtf:.3f}", file=sys.stderr)
    if wer:
        print(wer)
        print(cer)
    if result.failures:
        print(f"{len(result.failures)} input(s) failed (listed in {out / 'failed.txt'}):", file=sys.stderr)
        for failure in result.failures[:20]:
            print(f"  {failure.name}: {failure.reason}", file=sys.stderr)
        return 1
    return 0


def _add_transcribe_parser(commands) -> None:
    p = commands.add_parser(
        "transcribe", help="transcribe audio with a fine-tuned CTC model",
        description="Transcribe audio files (any sample rate, mono or multi-channel), directories, HF datasets, "
                    "a Kaldi data dir or a JSONL manifest. Word times come from CTC forced alignment. With reference "
                    "transcripts (Kaldi text or manifest) it prints Kaldi-style %WER/%CER. Unreadable inputs "
                    "are listed and skipped; the exit status is 1 when any input failed.",
        epilog="example: seqattn transcribe exp/ft/checkpoints/update_00000600 talk.wav --output-format all",
    )
    p.add_argument("model_dir", metavar="MODEL",
                   help="a seqattn CTC model directory (config.json, model.safetensors, tokens.json), or an .onnx "
                        "file written by seqattn export onnx")
    p.add_argument("inputs", nargs="*", help="audio files or directories, or HF datasets (a save_to_disk directory or "
                                             "parquet/arrow files; 'PATH?split=test&text=transcription')")
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="what runs the model: PyTorch for model directories, onnxruntime (CPU) for .onnx files; "
                        "auto picks by MODEL")
    p.add_argument("--data-dir", action="append",
                   help="a Kaldi data dir (honours segments; a wav.scp entry ending in '|' is a shell command whose "
                        "stdout is the audio, run with sh -c as Kaldi does). Repeat it to decode several sets with "
                        "one model load: each is scored on its own and written to OUTPUT_DIR/<its name>")
    p.add_argument(
        "--manifest",
        help="a JSONL manifest (audio_filepath, text), an HF dataset, or a fairseq .tsv manifest (its "
        ".wrd or .ltr transcripts beside it)",
    )
    p.add_argument("--output-dir", default="transcripts")
    p.add_argument("--output-format", default="txt", choices=["txt", "json", "ctm", "srt", "vtt", "all"])
    p.add_argument("--beam-size", type=int, default=1, help="1 = greedy; >1 = flashlight beam search")
    p.add_argument("--lm", help="KenLM binary or ARPA file for beam search")
    p.add_argument("--lexicon", help="lexicon file (word followed by its characters and |)")
    p.add_argument("--lm-weight", type=float, default=0.5)
    p.add_argument("--word-score", type=float, default=0.0)
    p.add_argument("--sil-score", type=float, default=0.0, help="score added for the word boundary (silence) token")
    p.add_argument(
        "--chunk-seconds",
        type=float,
        default=None,
        help="chunk long audio (default: 30 s for models with full attention, one pass otherwise; 0 = never)",
    )
    p.add_argument(
        "--stream-seconds",
        type=float,
        default=600.0,
        help="a model whose heads are all local reads plain files longer than this from disk window by "
        "window: the same transcript as one pass in bounded memory (default 600; inf = never)",
    )
    p.add_argument(
        "--language",
        help="language of inputs that do not name one (utt2lang, manifest): models "
        "trained with the common Indic label set write this language's script",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="utterances per encoder batch (sorted by length; inputs over a minute run alone)",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    add_device_argument(p)
    p.add_argument("--no-pipes", action="store_true", help="refuse piped wav.scp entries (they become errors)")
    p.add_argument("--pipe-timeout", type=float, default=120.0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_transcribe)


def add_transcribe_parser(commands) -> None:
    _add_transcribe_parser(commands)
