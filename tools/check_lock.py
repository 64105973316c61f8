#!/usr/bin/env python
"""Check that the running interpreter's packages are exactly the locked ones (tools/requirements.lock).

Run: .venv/bin/python tools/check_lock.py [--lock tools/requirements.lock]

Every installed distribution must be pinned in the lock at the version installed; the project itself and pip
are exempt. A package missing from the lock, or at another version, is one line of output and exit code 1, so
a virtualenv that drifted from the tested set (a hand upgrade, a dependency added to pyproject.toml without
relocking) fails `make test` before any test runs rather than passing here and failing on a fresh machine.
"""
from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

EXEMPT = {"pip", "seqattn"}


def canonical(name: str) -> str:
    """PEP 503 normalised project name (``Foo_Bar.baz`` and ``foo-bar-baz`` are one project)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` from ``name==version`` lines; a malformed line names itself."""
    pins = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if match is None:
            raise SystemExit(f"{path}:{number}: expected 'name==version', got {line!r}")
        pins[canonical(match.group(1))] = match.group(2)
    return pins


def installed() -> dict[str, str]:
    """``{canonical name: version}`` of the distributions this interpreter sees (first on sys.path wins)."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def differences(pins: dict[str, str], present: dict[str, str]) -> list[str]:
    """One line per installed package that the lock does not pin at its installed version."""
    problems = []
    for name, version in sorted(present.items()):
        if name in EXEMPT:
            continue
        if name not in pins:
            problems.append(f"{name}=={version} is installed but not in the lock")
        elif pins[name] != version:
            problems.append(f"{name}=={version} is installed but the lock pins {name}=={pins[name]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lock", type=Path, default=Path(__file__).resolve().parent / "requirements.lock")
    args = parser.parse_args(argv)
    problems = differences(read_lock(args.lock), installed())
    for problem in problems:
        print(f"{args.lock}: {problem}", file=sys.stderr)
    if problems:
        print(f"the environment of {sys.executable} differs from the lock in {len(problems)} package(s): "
              "reinstall with `rm -rf .venv && bash tools/setup_env.sh`, or, to move the tested set, run "
              "`make test` and then `bash tools/lock_env.sh`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
