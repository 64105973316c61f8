"""Command-line options that several commands share, spelled the same way everywhere."""
from __future__ import annotations

import argparse
import shlex
import sys


def add_device_argument(parser) -> None:
    """``--device auto|cpu|cuda|cuda:N``: the one device rule (``seqattn.utils.device``)."""
    parser.add_argument("--device", default="auto",
                        help="auto (a GPU when one is visible, else the CPU), cpu, cuda or cuda:N (default: auto)")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that shows every option's default (as whisper's CLI does), but not the empty ones."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "default" in text.lower()
            or action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
            or not action.option_strings
        ):  # already said, or nothing worth saying
            return text
        return f"{text} (default: %(default)s)".strip()


def finish_help(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` and all its sub-commands the defaults-showing formatter, and a help line to every option
    that has a default worth showing but no help text (argparse prints no default without one)."""
    parser.formatter_class = DefaultsHelpFormatter
    for action in parser._actions:  # argparse keeps its actions here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                finish_help(sub)
        elif (
            action.help is None
            and action.option_strings
            and action.default is not None
            and action.default is not False
            and action.default != argparse.SUPPRESS
        ):
            action.help = "default: %(default)s"
    return parser


def command_line() -> str:
    return " ".join(["seqattn"] + [shlex.quote(a) for a in sys.argv[1:]])
