"""Dataclass configs from plain values (JSON/YAML), with unknown keys named in the error."""
from __future__ import annotations

import dataclasses


def check_known_keys(cls, values: dict, what: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(unknown)}")
