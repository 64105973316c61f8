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
