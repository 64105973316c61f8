"""``seqattn validate-data-dir``: check (and fix) Kaldi data dirs."""
from __future__ import annotations

import argparse
import sys


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


def add_data_parser(commands) -> None:
    _add_validate_data_dir_parser(commands)
