"""``seqattn train-lm``, ``seqattn eval-lm`` and ``seqattn generate``: thin wrappers over the LM modules."""
from __future__ import annotations

import json
import sys

from .options import add_device_argument
from .training import run_training, training_arguments


def _load_lm(model_dir: str, device: str = "auto"):
    from seqattn.data.lm_tokenizers import load_tokenizer
    from seqattn.models.io import ModelDirError, load_model
    from seqattn.models.lm import TransformerLM
    from seqattn.utils.device import resolve_device

    model = load_model(model_dir, resolve_device(device))
    if not isinstance(model, TransformerLM):
        raise ModelDirError(f"{model_dir} is not a language model (model_type must be transformer_lm)")
    tokenizer = load_tokenizer(model_dir)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ModelDirError(f"{model_dir}: the tokenizer has {tokenizer.vocab_size} tokens, the model only "
                            f"{model.config.vocab_size}")
    return model, tokenizer


def _is_report(path) -> bool:
    """True when ``path`` holds a JSON report that eval-lm wrote (and may be replaced by a new one)."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(values, dict) and {"files", "overall", "scheme"} <= set(values)


def _train_lm(args) -> int:
    from seqattn.train.lm import LMTrainConfig, train

    return run_training(args, LMTrainConfig, train, "best checkpoint")


def _eval_lm(args) -> int:
    import torch

    from seqattn.evaluate.perplexity import evaluate_files
    from seqattn.utils.device import module_device

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.json not in (None, "-"):
        from pathlib import Path

        report = Path(args.json).resolve()
        if any(Path(f).resolve() == report for f in args.files):
            print(f"seqattn eval-lm: error: --json {args.json} is also an input file; give the report its own path "
                  "(or - for stdout)", file=sys.stderr)
            return 2
        if report.is_file() and not _is_report(report):
            print(f"seqattn eval-lm: error: --json {args.json} exists and is not an eval-lm report; refusing to "
                  "overwrite it (did you mean it as an input? --json takes the report's path)", file=sys.stderr)
            return 2
    model, tokenizer = _load_lm(args.model_dir, args.device)
    context = args.context or model.config.max_context
    per_file, overall = evaluate_files(model, tokenizer, args.files, context=context, stride=args.stride,
                                       batch_size=args.batch_size, errors=args.errors, device=module_device(model),
                                       progress=not args.quiet, copy_window=args.copy_window or None)
    scheme = {"scheme": "sliding" if args.stride and args.stride < context else "blocks", "context": context,
              "stride": args.stride or context, "model": args.model_dir}
    report = {**scheme, "files": [s.to_json() for s in per_file], "overall": overall.to_json()}
    failed = [s for s in per_file if s.error is not None]
    if args.json:
        text = json.dumps(report, indent=1)
        if args.json == "-":
            print(text)
        else:
            from pathlib import Path

            Path(args.json).write_text(text + "\n")
    for score in per_file:
        values = score.to_json()
        if values["error"]:
            print(f"{score.name}: {values['error']}", file=sys.stderr)
        elif args.json != "-":
            print(f"{score.name}: {values['tokens']} tokens, {values['words']} words, {values['bytes']} bytes; "
                  f"loss {values['loss']:.4f}, token ppl {values['token_ppl']:.3f}, word ppl {values['word_ppl']:.3f}, "
                  f"bits/byte {values['bits_per_byte']:.4f}")
    total = overall.to_json()
    if args.json != "-" and total["tokens"]:
        print(f"overall ({scheme['scheme']}, context {context}, stride {scheme['stride']}): {total['tokens']} tokens, "
              f"token ppl {total['token_ppl']:.3f}, word ppl {total['word_ppl']:.3f}, "
              f"bits/byte {total['bits_per_byte']:.4f}; {len(failed)} of {len(per_file)} files not scored")
        for name, part in (total.get("copy_source") or {}).items():
            loss = "n/a" if part["loss"] is None else f"{part['loss']:.4f}"
            print(f"  copy source {name} (window {args.copy_window}): {part['tokens']} tokens, loss {loss}")
    return 1 if failed else 0


def _generate(args) -> int:
    import torch

    from seqattn.models.lm import generate
    from seqattn.utils.device import module_device

    model, tokenizer = _load_lm(args.model_dir, args.device)
    prompt = [tokenizer.bos_id] + tokenizer.encode(args.prompt)
    tokens = torch.tensor([prompt], device=module_device(model))
    for i in range(args.num_samples):
        out = generate(model, tokens, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                       seed=args.seed + i, use_cache=not args.no_cache)
        text = args.prompt + tokenizer.decode(out[0, tokens.shape[1]:].tolist())  # the prompt as typed
        print(text if args.num_samples == 1 else f"--- sample {i}\n{text}")
    return 0


def add_lm_parsers(commands) -> None:
    p = commands.add_parser(
        "train-lm", help="train a Routing Transformer language model on text files",
        description="Learn a tokenizer (byte, char, word or sentencepiece) from the training text, tokenize the "
                    "corpus once into memory-mapped token files, and train a decoder-only LM with local and "
                    "routing heads: packed fixed-length sequences, AdamW with warm-up and cosine/rsqrt decay, "
                    "gradient clipping and accumulation, optional bf16 autocast, validation loss/perplexity every "
                    "validate_every updates, atomic checkpoints and exact resume. Runs under torchrun too.",
        epilog="example: seqattn train-lm recipes/lm/tinyshakespeare_char.yaml data.train='[data/train.txt]' "
               "data.valid='[data/valid.txt]' run.output_dir=exp/lm",
    )
    training_arguments(p, "optim.lr=1e-3 model.attention.routing.heads=2", _train_lm)

    p = commands.add_parser(
        "eval-lm", help="perplexity of a language model on text files",
        description="Token perplexity, word perplexity (over whitespace words) and bits per byte of each file "
                    "and overall. --context N alone scores non-overlapping blocks of N tokens; with --stride S "
                    "windows of N tokens start every S tokens and each token is scored once with at least N-S "
                    "tokens of context. Files are streamed; non-UTF-8 bytes are an error naming their offset "
                    "unless --errors replace. Exit status 1 when any file could not be scored.",
        epilog="example: seqattn eval-lm exp/lm/checkpoints/update_00005000 data/test.txt --context 256 --stride 128",
    )
    p.add_argument("model_dir", help="a seqattn LM directory (config.json, model.safetensors, tokenizer.json)")
    p.add_argument(
        "files",
        nargs="+",
        help="UTF-8 text files, or HF datasets (a save_to_disk directory or parquet files; PATH?split=S&text=COLUMN)",
    )
    p.add_argument("--context", type=int, default=0, help="tokens per window (default: the model's max_context)")
    p.add_argument("--stride", type=int, default=0, help="sliding-window stride (default: = context, i.e. blocks)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument(
        "--copy-window",
        type=int,
        default=0,
        metavar="W",
        help="also report the loss by copy source: targets whose 12-token n-gram last occurred within W "
        "tokens, only beyond W (what only long-range attention can use), or nowhere in the window",
    )
    p.add_argument("--errors", choices=["strict", "replace"], default="strict")
    p.add_argument("--json", metavar="PATH", help="write the JSON report to PATH ('-' for stdout)")
    p.add_argument("--threads", type=int, default=0)
    add_device_argument(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_eval_lm)

    p = commands.add_parser(
        "generate",
        help="sample text from a language model",
        description="Continue a prompt. By default each new token costs one cached step (local heads keep "
        "their last window of keys, routing heads the last tokens of each cluster); --no-cache "
        "recomputes the whole sequence per token and gives the same tokens.",
        epilog="example: seqattn generate exp/lm/best 'ROMEO:' --max-new-tokens 300 --temperature 0.8 --top-k 40",
    )
    p.add_argument("model_dir")
    p.add_argument("prompt", nargs="?", default="")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true")
    add_device_argument(p)
    p.set_defaults(handler=_generate)
