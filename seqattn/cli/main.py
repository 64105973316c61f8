"""``seqattn <command>``: one entry point; each command's arguments and printing live in its own module
(:mod:`.training`, :mod:`.transcribe`, :mod:`.data`, :mod:`.build_lm`, :mod:`.convert`, :mod:`.analyze`,
:mod:`.lm`), the work itself in the library.

Expected errors (bad config keys, missing data, unreadable checkpoints) print one clear line and exit 2;
tracebacks are for bugs.
"""
from __future__ import annotations

import argparse
import sys

from .analyze import add_analyze_parser
from .build_lm import add_build_lm_parser
from .convert import add_convert_parsers
from .data import add_data_parser
from .lm import add_lm_parsers
from .options import finish_help
from .training import add_training_parsers
from .transcribe import add_transcribe_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqattn",
        description="Multilingual speech and sequence modelling on local and content-routed attention.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_training_parsers(commands)
    add_transcribe_parser(commands)
    add_data_parser(commands)
    add_build_lm_parser(commands)
    add_convert_parsers(commands)
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
