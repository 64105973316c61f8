"""``seqattn <command>``: one entry point, one thin wrapper per command.

Expected errors (bad config keys, missing data, unreadable checkpoints) print one clear line and exit 2;
tracebacks are for bugs.
"""
from __future__ import annotations

import argparse
import sys

from .analyze import add_analyze_parser, add_localize_parser
from .lm import add_lm_parsers
from .options import add_device_argument, finish_help
from .training import run_training, training_arguments


def _pretrain(args) -> int:
    from seqattn.train.pretrain import PretrainConfig, train

    return run_training(args, PretrainConfig, train, "final checkpoint")


def _finetune(args) -> int:
    from seqattn.train.finetune import FinetuneConfig, train

    return run_training(args, FinetuneConfig, train, "best checkpoint")


def _transcribe(args) -> int:
    from pathlib import Path

    import torch

    from seqattn.decode.transcribe import Beam, collect_inputs, load_recognizer

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
    names = [Path(d.rstrip("/")).name for d in data_dirs]
    if len(data_dirs) > 1 and (args.inputs or args.manifest or len(set(names)) < len(names)):
        print("seqattn transcribe: error: several --data-dir are decoded each into OUTPUT_DIR/<its name>: give "
              "no other inputs, and data dirs with different names", file=sys.stderr)
        return 2
    from seqattn.utils.device import resolve_device

    backend = args.backend
    if backend == "auto":
        backend = "onnxruntime" if str(args.model_dir).endswith(".onnx") else "torch"
    if backend == "onnxruntime":
        from seqattn.interop.onnx import OnnxCTC

        if Path(args.model_dir).is_dir():
            print(f"seqattn transcribe: error: --backend onnxruntime runs an exported .onnx file; export this "
                  f"model first: seqattn export onnx {args.model_dir} model.onnx", file=sys.stderr)
            return 2
        model = OnnxCTC(args.model_dir, threads=args.threads)
        vocab = model.vocabulary
    else:
        model, vocab = load_recognizer(args.model_dir, resolve_device(args.device))
    beam = None
    if args.beam_size > 1 or args.lm or args.lexicon:
        beam = Beam(vocab, max(args.beam_size, 1), args.lm, args.lexicon, args.lm_weight, args.word_score,
                    args.sil_score)
    if len(data_dirs) <= 1:  # one job: everything given, written to --output-dir
        items, failures = collect_inputs(args.inputs, data_dirs[0] if data_dirs else None, args.manifest)
        return _transcribe_job(args, model, vocab, beam, items, failures, Path(args.output_dir))
    # Several data dirs (Kaldi's decode of dev and test sets): the model loads once, each set is scored on
    # its own and written to OUTPUT_DIR/<name of the data dir>; a set that cannot be read is reported and the
    # others go on.
    from seqattn.errors import SeqattnError

    status = 0
    for data_dir, name in zip(data_dirs, names):
        print(f"{name}:", file=sys.stderr)
        try:
            items, failures = collect_inputs([], data_dir)
        except SeqattnError as error:  # the set is reported (and listed in its failed.txt); the others go on
            print(f"seqattn transcribe: error: {error}", file=sys.stderr)
            out = Path(args.output_dir) / name
            out.mkdir(parents=True, exist_ok=True)
            (out / "failed.txt").write_text(f"{data_dir}\t{error}\n", encoding="utf-8")
            status = 1
            continue
        status = max(status, _transcribe_job(args, model, vocab, beam, items, failures, Path(args.output_dir) / name))
    return status


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


def _validate_data_dir(args) -> int:
    """Each directory in turn (one process for many: the recipes check dozens), every one reported; exit
    status 1 if any is invalid, after all of them are checked."""
    from seqattn.data.kaldi import DataDirError, fix_data_dir, read_data_dir

    failed = 0
    for data_dir in args.data_dir:
        if args.fix:
            data = fix_data_dir(data_dir, check_audio=args.check_audio)
            for problem in data.problems:
                print(f"  {problem}", file=sys.stderr)
            print(f"{data_dir}: {len(data.problems)} problem(s); dropped {data.dropped} utterance(s), kept "
                  f"{len(data.utterances)} (originals in {data_dir}/.backup)")
            continue
        try:
            data = read_data_dir(data_dir, check_audio=args.check_audio)
        except DataDirError as error:
            print(f"seqattn validate-data-dir: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{data_dir}: valid, {len(data.utterances)} utterances")
    if failed and len(args.data_dir) > 1:
        print(f"seqattn validate-data-dir: {failed} of {len(args.data_dir)} data dirs are invalid", file=sys.stderr)
    return 1 if failed else 0


def _build_lm(args) -> int:
    from pathlib import Path

    from seqattn.data.vocabulary import load_vocabulary
    from seqattn.decode.ngram import build_lm, normalized_corpus, write_lexicon

    vocab = load_vocabulary(args.vocab)
    texts = []
    for name in args.text:
        path = Path(name)
        if not path.is_file():
            print(f"seqattn build-lm: error: {path} does not exist", file=sys.stderr)
            return 2
        for line in path.read_text(encoding="utf-8").splitlines():
            if args.kaldi_text:  # "<utt-id> <transcript>"
                line = line.split(maxsplit=1)[1] if len(line.split(maxsplit=1)) == 2 else ""
            texts.append(line)
    if vocab.common_script and not args.language:
        print("seqattn build-lm: error: this vocabulary uses the common Indic label set: give --language",
              file=sys.stderr)
        return 2
    sentences = normalized_corpus(texts, vocab, args.language)
    if not sentences:
        print("seqattn build-lm: error: no sentence of the text can be spelled with the vocabulary", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    model = build_lm(sentences, out, order=args.order)
    words = write_lexicon(sentences, vocab, out / "lexicon.txt", language=args.language)
    print(f"{len(sentences)} of {len(texts)} sentences, {words} lexicon words: {model} and {out / 'lexicon.txt'}")
    return 0


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


def _export(args) -> int:
    from seqattn.interop.onnx import export_onnx

    report = export_onnx(args.model_dir, args.out, opset=args.opset)
    print(f"wrote {report.path} ({report.size_bytes / 2**20:.1f} MiB) in {report.seconds:.1f} s; checked with "
          f"onnxruntime on inputs of {', '.join(str(n) for n in report.checked_samples)} samples: max |logit "
          f"difference| {report.max_difference:.2e}")
    return 0


def _add_pretrain_parser(commands) -> None:
    p = commands.add_parser(
        "pretrain", help="wav2vec 2.0 self-supervised pretraining",
        description="Pretrain wav2vec 2.0 on unlabelled audio (Kaldi data dirs or manifests). Resumes from "
                    "OUTPUT_DIR/checkpoints when it exists. Under torchrun every process takes a share of "
                    "each batch.",
        epilog="example: seqattn pretrain recipes/wav2vec2/pretrain_tiny.yaml "
               "data.train='[{path: data/hi, language: hi}]' run.output_dir=exp/pt optim.lr=1e-3",
    )
    training_arguments(p, "optim.lr=1e-4 run.max_time_s=900", _pretrain)


def _add_finetune_parser(commands) -> None:
    p = commands.add_parser(
        "finetune", help="CTC fine-tuning of a (pretrained) wav2vec 2.0 encoder",
        description="Fine-tune wav2vec 2.0 with CTC on labelled Kaldi data dirs or manifests. The character "
                    "vocabulary comes from the training text (NFC); utterances with uncovered characters or "
                    "labels longer than their frames are reported in rejected_utterances.txt. Validation "
                    "WER/CER every validate_every updates; the best checkpoint is kept.",
        epilog="example: seqattn finetune recipes/wav2vec2/finetune_tiny.yaml init=exp/pt/checkpoints/update_00000400 "
               "data.train='[{path: data/train_hi}]' data.valid='[{path: data/dev_hi}]' run.output_dir=exp/ft",
    )
    training_arguments(p, "optim.lr=1e-4 freeze_updates=100", _finetune)


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


def _add_validate_data_dir_parser(commands) -> None:
    p = commands.add_parser(
        "validate-data-dir",
        help="check a Kaldi data dir (and --fix it)",
        description="Validate a Kaldi data dir the way utils/validate_data_dir.sh does: sorted files, ids "
        "present in every file, no duplicates, no empty transcripts, no CRLF or non-UTF-8 lines, "
        "segments inside wav.scp recordings, audio files present. Every problem is reported with "
        "its file and line; exit status 1 if there are any. --fix drops the offending entries "
        "(like utils/fix_data_dir.sh), reports how many, and keeps the originals in .backup/.",
        epilog="example: seqattn validate-data-dir data/train_hi --fix; seqattn validate-data-dir data/*_hi",
    )
    p.add_argument("data_dir", nargs="+", help="one or more data dirs, each checked and reported")
    p.add_argument("--fix", action="store_true", help="drop offending entries and rewrite the directory")
    p.add_argument(
        "--check-audio",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check that every plain wav.scp file exists (default: yes)",
    )
    p.set_defaults(handler=_validate_data_dir)


def _add_build_lm_parser(commands) -> None:
    p = commands.add_parser(
        "build-lm",
        help="KenLM n-gram LM + lexicon for beam search",
        description="Train an n-gram LM with KenLM's lmplz/build_binary (tools/install_kenlm.sh) on transcripts "
        "and write the lexicon (word, its characters, |) of the words the CTC vocabulary can spell. "
        "Sentences are cut at words with characters outside the vocabulary.",
        epilog="example: seqattn build-lm data/train_hi/text --kaldi-text --vocab exp/ft/best/tokens.json "
        "--out-dir exp/lm/hi",
    )
    p.add_argument("text", nargs="+", help="text files: one sentence per line, or Kaldi text with --kaldi-text")
    p.add_argument("--kaldi-text", action="store_true", help="lines start with an utterance id")
    p.add_argument("--vocab", required=True, help="the model's tokens.json")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--language", help="the text's language (needed for common-label-set vocabularies)")
    p.set_defaults(handler=_build_lm)


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
    add_localize_parser(formats)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqattn",
        description="Multilingual speech and sequence modelling on local and content-routed attention.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_pretrain_parser(commands)
    _add_finetune_parser(commands)
    _add_transcribe_parser(commands)
    _add_validate_data_dir_parser(commands)
    _add_build_lm_parser(commands)
    _add_convert_parser(commands)
    _add_export_parser(commands)
    add_analyze_parser(commands)
    add_lm_parsers(commands)
    return finish_help(parser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from seqattn.utils.malloc import tune_glibc_malloc

    tune_glibc_malloc()
    from seqattn.errors import SeqattnError

    try:
        return args.handler(args)
    except (SeqattnError, FileNotFoundError) as error:  # every error meant for the user; tracebacks are bugs
        print(f"seqattn {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seqattn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
