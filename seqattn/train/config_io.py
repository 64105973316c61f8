"""YAML configs with ``key=value`` overrides, built into nested dataclasses (values only, no class names).

Unknown keys are errors that name the full dotted key, so a typo stops the run before training starts.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from seqattn.errors import SeqattnError
from seqattn.utils.values import from_values


class ConfigError(SeqattnError, ValueError):
    pass


def parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. optim.lr=1e-4)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: cannot parse value: {error}") from None
    return key.strip().split("."), value


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = values
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {key} is not a section")
        node[keys[-1]] = value
    return values


def build(cls, values, where: str = ""):
    """Instantiate dataclass ``cls`` from plain values: :func:`seqattn.utils.values.from_values` (every key
    checked, every value against its field's type, nested dataclasses by their type hints), or the class's own
    ``from_dict``; any error a :class:`ConfigError` naming the full dotted key."""
    if values is None:
        values = {}
    try:
        if hasattr(cls, "from_dict") and isinstance(values, dict):
            return cls.from_dict(values)
        return from_values(cls, values, where)
    except TypeError as error:  # a dataclass call that lacks an argument
        raise ConfigError(f"{where or cls.__name__}: {error}") from None
    except ValueError as error:
        raise ConfigError(str(error)) from None


def load_config(cls, path: str | None, overrides: list[str] = ()):
    values = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: invalid YAML: {error}") from None
    return build(cls, apply_overrides(values, list(overrides)))


def to_plain(obj):
    """Dataclass -> nested plain values (for logging the effective config)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
