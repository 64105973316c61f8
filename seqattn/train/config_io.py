"""YAML configs with ``key=value`` overrides, built into nested dataclasses (values only, no class names).

Unknown keys are errors that name the full dotted key, so a typo stops the run before training starts.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml

from seqattn.errors import SeqattnError
from seqattn.utils.values import coerce


class ConfigError(SeqattnError, ValueError):
    pass


# keys that moved: where a config that still uses the old one is told to look
MOVED_KEYS = {"optim.bf16": "run.precision (auto | fp32 | bf16 | fp16)",
              "model_overrides": "model (fine-tuning applies its keys on the init's config, or with init: null on "
                                 "the defaults)"}


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
    """Instantiate dataclass ``cls`` from plain values, recursing into dataclass-typed fields."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(values).__name__}")
    if hasattr(cls, "from_dict"):
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: {error}" if where else str(error)) from None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        moved = [f"{prefix}{k} is now {MOVED_KEYS[prefix + k]}" for k in unknown if prefix + k in MOVED_KEYS]
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}"
                          + (f" ({'; '.join(moved)})" if moved else ""))
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(kind):
            kwargs[name] = build(kind, value, key)
        elif (
            typing.get_origin(kind) is list
            and typing.get_args(kind)
            and dataclasses.is_dataclass(typing.get_args(kind)[0])
        ):
            if not isinstance(value, list):
                raise ConfigError(f"{key}: expected a list")
            kwargs[name] = [build(typing.get_args(kind)[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
        else:
            try:
                kwargs[name] = coerce(value, kind, key)
            except ValueError as error:
                raise ConfigError(str(error)) from None
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{where or cls.__name__}: {error}") from None
    except ValueError as error:  # a __post_init__ check, which names its key
        raise ConfigError(f"{where}.{error}" if where else str(error)) from None


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
