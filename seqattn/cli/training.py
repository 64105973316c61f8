"""What every training command (pretrain, finetune, train-lm) shares: its arguments and its body."""
from __future__ import annotations

import shlex
import sys


def training_arguments(parser, override_example: str, handler) -> None:
    """CONFIG, key=value overrides and --print-config: the same for every training command."""
    parser.add_argument("config", help="YAML config (see recipes/)")
    parser.add_argument("overrides", nargs="*", help=f"key=value overrides, e.g. {override_example}")
    parser.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    parser.set_defaults(handler=handler)


def run_training(args, config_class, train, result_label: str) -> int:
    """Shared body of the training commands: YAML + overrides -> dataclass config -> train()."""
    import json

    from seqattn.train.config_io import load_config, to_plain

    config = load_config(config_class, args.config, args.overrides)
    if args.print_config:
        print(json.dumps(to_plain(config), indent=2))
        return 0
    path = train(config, command=" ".join(["seqattn"] + [shlex.quote(a) for a in sys.argv[1:]]))
    print(f"{result_label}: {path}")
    return 0


def _pretrain(args) -> int:
    from seqattn.train.pretrain import PretrainConfig, train

    return run_training(args, PretrainConfig, train, "final checkpoint")


def _finetune(args) -> int:
    from seqattn.train.finetune import FinetuneConfig, train

    return run_training(args, FinetuneConfig, train, "best checkpoint")


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


def add_training_parsers(commands) -> None:
    """``seqattn pretrain`` and ``seqattn finetune`` (``train-lm`` is in :mod:`.lm`)."""
    _add_pretrain_parser(commands)
    _add_finetune_parser(commands)
