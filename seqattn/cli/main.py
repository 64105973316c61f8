"""``seqattn <command>``: one entry point, one thin wrapper per command.

Expected errors (bad config keys, missing data, unreadable checkpoints) print one clear line and exit 2;
tracebacks are for bugs.
"""
from __future__ import annotations

import argparse
import shlex
import sys


def _pretrain(args) -> int:
    from seqattn.train.config_io import load_config
    from seqattn.train.pretrain import PretrainConfig, train

    config = load_config(PretrainConfig, args.config, args.overrides)
    if args.print_config:
        import json

        from seqattn.train.config_io import to_plain

        print(json.dumps(to_plain(config), indent=2))
        return 0
    final = train(config, command=" ".join(["seqattn"] + [shlex.quote(a) for a in sys.argv[1:]]))
    print(f"final checkpoint: {final}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqattn",
        description="Multilingual speech and sequence modelling on local and content-routed attention.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "pretrain", help="wav2vec 2.0 self-supervised pretraining",
        description="Pretrain wav2vec 2.0 on unlabelled audio (Kaldi data dirs or manifests). Resumes from "
                    "OUTPUT_DIR/checkpoints when it exists. Under torchrun every process takes a share of "
                    "each batch.",
        epilog="example: seqattn pretrain recipes/wav2vec2/pretrain_tiny.yaml "
               "data.train='[{path: data/hi, language: hi}]' run.output_dir=exp/pt optim.lr=1e-3",
    )
    p.add_argument("config", help="YAML config (see recipes/wav2vec2/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4 run.max_time_s=900")
    p.add_argument("--print-config", action="store_true", help="print the effective config and exit")
    p.set_defaults(handler=_pretrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from seqattn.data.audio import AudioError
    from seqattn.data.kaldi import DataDirError
    from seqattn.models.io import ModelDirError
    from seqattn.train.config_io import ConfigError
    from seqattn.train.pretrain import TrainingError

    try:
        return args.handler(args)
    except (ConfigError, TrainingError, DataDirError, ModelDirError, AudioError, FileNotFoundError) as error:
        print(f"seqattn {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seqattn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
