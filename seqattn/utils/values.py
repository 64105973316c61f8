"""Dataclass configs from plain values (YAML, JSON, ``key=value`` overrides), checked against the field types.

:func:`from_values` builds a dataclass from a mapping: unknown keys are refused, every value is checked
against its field's type hint (int, float, bool, str, ``Literal`` choices, lists and tuples of those, nested
dataclasses, dicts, ``X | None``), and a value that does not fit is a ``ValueError`` naming the key, the value and
the type
expected. Only what YAML leaves ambiguous is coerced: ``1e-3`` (a string to YAML 1.1, which wants a dot) into a
float field, an int into a float field, and a number into a string field. A string is never an int or a bool.
"""

from __future__ import annotations

import dataclasses
import types
import typing

# Keys that were renamed, by full dotted key: a config that still uses one is told where it went.
MOVED_KEYS = {"optim.bf16": "run.precision (auto | fp32 | bf16 | fp16)",
              "model_overrides": "model (fine-tuning applies its keys on the init's config, or with init: null on "
                                 "the defaults)"}


def check_known_keys(cls, values: dict, where: str = "") -> None:
    """Refuse keys that ``cls`` has no field for, naming each by its full dotted key (``where`` is the
    section's own key, "" at the top), and where a renamed one went."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        moved = [f"{prefix}{k} is now {MOVED_KEYS[prefix + k]}" for k in unknown if prefix + k in MOVED_KEYS]
        raise ValueError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}"
                         + (f" ({'; '.join(moved)})" if moved else ""))


def _describe(kind) -> str:
    if kind is type(None):
        return "null"
    if isinstance(kind, type):
        return kind.__name__
    return str(kind).replace("typing.", "")


def _to_bool(value, key):
    if isinstance(value, bool):
        return value
    raise _mismatch(value, bool, key)


def _to_int(value, key):
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _mismatch(value, int, key)


def _to_float(value, key):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise _mismatch(value, float, key)


def _to_str(value, key):
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _mismatch(value, str, key)


SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _to_union(value, kind, key):
    """``X | None`` and other unions: None where allowed, else the first member the value fits."""
    options = typing.get_args(kind)
    if value is None and type(None) in options:
        return None
    errors = []
    for option in (a for a in options if a is not type(None)):
        try:
            return coerce(value, option, key)
        except ValueError as error:
            errors.append(error)
    raise errors[0] if len(errors) == 1 else _mismatch(value, kind, key)


def _to_dataclass(value, kind, key):
    if isinstance(value, kind):
        return value
    if value is None:  # an empty YAML section: the section's defaults
        value = {}
    if not isinstance(value, dict):
        raise _mismatch(value, kind, key, "a mapping")
    builder = getattr(kind, "from_dict", None)
    return builder(value) if builder is not None else from_values(kind, value, key)


def _to_sequence(value, kind, key):
    """Lists (``list[X]``: each element as X) and tuples (``tuple[X, Y]``: one type per position)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if not isinstance(value, (list, tuple)):
        raise _mismatch(value, kind, key, "a list")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise _mismatch(value, kind, key, f"a list of {len(args)} values")
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    element = args[0] if args else None
    items = [coerce(v, element, f"{key}[{i}]") if element is not None else v for i, v in enumerate(value)]
    return tuple(items) if (kind is tuple or origin is tuple) else items


def coerce(value, kind, key: str):
    """``value`` as field type ``kind``, or a ValueError that names ``key``, the value and the type."""
    origin = typing.get_origin(kind)
    if kind is typing.Any or kind is object:
        return value
    if origin in (typing.Union, types.UnionType):
        return _to_union(value, kind, key)
    if origin is typing.Literal:
        if value in typing.get_args(kind):
            return value
        raise _mismatch(value, kind, key, "one of " + ", ".join(map(repr, typing.get_args(kind))))
    if dataclasses.is_dataclass(kind):
        return _to_dataclass(value, kind, key)
    if kind in SCALARS:
        return SCALARS[kind](value, key)
    if kind in (list, tuple) or origin in (list, tuple):
        return _to_sequence(value, kind, key)
    if (kind is dict or origin is dict) and not isinstance(value, dict):
        raise _mismatch(value, kind, key, "a mapping")
    return value  # a dict, or a type this checker does not know: left to the dataclass


def _mismatch(value, kind, key: str, expected: str | None = None) -> ValueError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return ValueError(f"{key} is {shown} ({type(value).__name__}), expected {expected or _describe(kind)}")


def from_values(cls, values: dict, where: str = ""):
    """An instance of dataclass ``cls`` from a mapping of plain values, every field checked and coerced."""
    if not isinstance(values, dict):
        raise ValueError(f"{where or cls.__name__}: expected a mapping, got {type(values).__name__}")
    check_known_keys(cls, values, where)
    hints = typing.get_type_hints(cls)
    prefix = f"{where}." if where else ""
    return cls(**{name: coerce(value, hints[name], prefix + name) for name, value in values.items()})


def merge_values(defaults: dict, given: dict) -> dict:
    """``given`` over ``defaults``, section by section: a nested mapping replaces only the keys it names."""
    merged = dict(defaults)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged
