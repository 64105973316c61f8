"""Command-line options that several commands share, spelled the same way everywhere."""
from __future__ import annotations


def add_device_argument(parser) -> None:
    """``--device auto|cpu|cuda|cuda:N``: the one device rule (``seqattn.utils.device``)."""
    parser.add_argument("--device", default="auto",
                        help="auto (a GPU when one is visible, else the CPU), cpu, cuda or cuda:N (default: auto)")
