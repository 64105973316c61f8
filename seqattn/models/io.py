"""Model directories: ``config.json`` + ``model.safetensors`` (+ tokenizer files, ``README.md`` metadata).

Loading never unpickles: weights come from safetensors and the config is JSON. Which class to build is
read from ``config.json``'s ``model_type`` through an explicit table of this package's own classes. Every file
is untrusted: the config is checked against its dataclass and against the weights' header before the model is
built (``seqattn.models.validation``), so a directory that disagrees with itself is a one-line error.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from seqattn.errors import SeqattnError
from seqattn.utils.atomic import atomic_directory
from seqattn.version import __version__

from .lm import LMConfig, TransformerLM
from .validation import (
    WeightsMismatch,
    check_weights,
    layer_count,
    read_safetensors_header,
    tied_aliases,
    tied_names,
)
from .wav2vec2 import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPretraining, Wav2Vec2Model

CONFIG_FILE, WEIGHTS_FILE, README_FILE = "config.json", "model.safetensors", "README.md"


class ModelDirError(SeqattnError, ValueError):
    """A model directory that is missing, incomplete or inconsistent."""


def model_type_of(model: torch.nn.Module) -> str:
    if isinstance(model, Wav2Vec2ForPretraining):
        return "wav2vec2_pretraining"
    if isinstance(model, Wav2Vec2ForCTC):
        return "wav2vec2_ctc"
    if isinstance(model, Wav2Vec2Model):
        return "wav2vec2"
    if isinstance(model, TransformerLM):
        return "transformer_lm"
    raise ModelDirError(f"cannot save a {type(model).__name__}: not a seqattn model")


MODEL_CLASSES = {"wav2vec2_pretraining": Wav2Vec2ForPretraining, "wav2vec2_ctc": Wav2Vec2ForCTC,
                 "wav2vec2": Wav2Vec2Model, "transformer_lm": TransformerLM}


def parse_config(model_type: str, config: dict, validate: bool = True):
    """The config dataclass of ``model_type`` from config.json's values, every field type-checked and (with
    ``validate``) the whole validated (ValueError naming the key otherwise)."""
    if model_type not in MODEL_CLASSES:
        raise ModelDirError(f"unknown model_type {model_type!r} in {CONFIG_FILE} (one of {', '.join(MODEL_CLASSES)})")
    if not isinstance(config, dict):
        raise ValueError(f"'config' must be a JSON object, got {type(config).__name__}")
    parsed = LMConfig.from_saved(config) if model_type == "transformer_lm" else Wav2Vec2Config.from_saved(config)
    if validate:
        parsed.validate()
    return parsed


def build_model(model_type: str, config: dict) -> torch.nn.Module:
    return MODEL_CLASSES[model_type](parse_config(model_type, config))


def _layer_counts(model_type: str, parsed, tensors: dict) -> list[tuple[str, int, int]]:
    """(config key, layers it asks for, layers the weights hold) for the numbered layers of ``model_type``."""
    names = list(tensors)
    if model_type == "transformer_lm":
        return [("num_layers", parsed.num_layers, layer_count(names, r"blocks\.(\d+)\."))]
    counts = [("num_layers", parsed.num_layers, layer_count(names, r"(?:wav2vec2\.)?encoder\.layers\.(\d+)\."))]
    conv_layers = len(parsed.conv_layers) if parsed.frontend == "cnn" else 0  # fbank front ends have no conv_layers
    return counts + [("conv_layers", conv_layers,
                      layer_count(names, r"(?:wav2vec2\.)?feature_extractor\.conv_layers\.(\d+)\."))]


def check_model_dir(path: Path, meta: dict) -> torch.nn.Module:
    """Check config.json against its dataclass and against model.safetensors' header, building the model on
    the meta device only (no memory); a ModelDirError names the file, the key or tensor, and the values.
    Returns that meta-device model, whose shapes now match the weights."""
    config_path, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    try:
        parsed = parse_config(meta["model_type"], meta["config"], validate=False)
    except (TypeError, ValueError) as error:
        raise ModelDirError(f"{config_path}: {error}") from None
    try:
        tensors = read_safetensors_header(weights)
    except (WeightsMismatch, OSError) as error:  # malformed or truncated; unreadable
        raise ModelDirError(f"cannot read {weights}: {getattr(error, 'strerror', None) or error}") from None
    try:
        for key, wanted, held in _layer_counts(meta["model_type"], parsed, tensors):
            if wanted != held:  # before validate(), whose work may grow with the layer count
                raise WeightsMismatch(f"{config_path}: {key} asks for {wanted} layers but {WEIGHTS_FILE} holds {held}")
        try:
            parsed.validate()
        except ValueError as error:
            raise WeightsMismatch(f"{config_path}: {error}") from None
        with torch.device("meta"):
            skeleton = MODEL_CLASSES[meta["model_type"]](parsed)
        check_weights(skeleton, tensors, meta["config"], str(config_path), WEIGHTS_FILE)
    except WeightsMismatch as error:
        raise ModelDirError(str(error)) from None
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError, OverflowError, IndexError) as error:
        raise ModelDirError(f"{config_path}: the model cannot be built from it: {error}") from None
    return skeleton


def _fill(skeleton: torch.nn.Module, state: dict[str, torch.Tensor], weights: Path) -> torch.nn.Module:
    """Put checked weights into a meta-device model without initialising it first (``assign=True``): each
    tensor in the model's dtype, tied weights tied again, and nothing left on the meta device."""
    aliases = tied_aliases(skeleton)
    expected = skeleton.state_dict(keep_vars=True)
    # On the CPU safetensors hands out views of the memory-mapped file: copy them out, so that a file replaced
    # in place while the model runs (cp truncates) cannot take the model's memory with it.
    state = {name: tensor.to(expected[name].dtype, copy=tensor.device.type == "cpu") for name, tensor in state.items()}
    skeleton.load_state_dict(state, strict=False, assign=True)
    for alias, source in aliases.items():
        owner, _, attribute = alias.rpartition(".")
        source_owner, _, source_attribute = source.rpartition(".")
        setattr(skeleton.get_submodule(owner), attribute,
                getattr(skeleton.get_submodule(source_owner), source_attribute))
    left = [name for name, tensor in list(skeleton.named_parameters()) + list(skeleton.named_buffers())
            if tensor.is_meta]
    if left:
        raise ModelDirError(f"{weights} does not fill the model: {', '.join(left[:4])} have no values")
    return skeleton


def save_model(model: torch.nn.Module, path: str | os.PathLike, *, extra_files: dict | None = None,
               command: str | None = None, notes: str = "") -> Path:
    """Write a complete model directory atomically (the old directory stays intact until the new is complete).

    ``extra_files`` maps file names to a ``pathlib.Path`` to copy (tokenizer files) or to ``str``/``bytes`` contents.
    """
    path = Path(path)
    model_type = model_type_of(model)
    config = {"model_type": model_type, "seqattn_version": __version__, "config": model.config.to_dict()}
    tied = tied_names(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k not in tied}
    with atomic_directory(path) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "model_type": model_type})
        for name, source in (extra_files or {}).items():
            if isinstance(source, os.PathLike):
                shutil.copyfile(source, tmp / name)
            else:
                (tmp / name).write_bytes(source.encode("utf-8") if isinstance(source, str) else source)
        params = sum(v.numel() for v in state.values())
        (tmp / README_FILE).write_text(
            f"# seqattn model\n\n- type: {model_type}\n- parameters: {params:,}\n- seqattn version: {__version__}\n"
            f"- written: {time.strftime('%Y-%m-%d %H:%M:%S')}\n- command: `{command or 'python API'}`\n\n{notes}\n"
        )
    return path


def read_model_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"model directory {path} does not exist")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ModelDirError(f"{path} is not a seqattn model directory: {CONFIG_FILE} is missing")
    try:
        meta = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelDirError(f"{config_path} is not valid JSON: {error}") from None
    if not isinstance(meta, dict):
        raise ModelDirError(f"{config_path} is not a JSON object")
    if "architectures" in meta or ("model_type" in meta and "config" not in meta):
        raise ModelDirError(f"{path} looks like a Hugging Face transformers model directory; convert it first: "
                            f"seqattn convert hf-import {path} OUT_DIR")
    if "model_type" not in meta or "config" not in meta:
        raise ModelDirError(f"{config_path} lacks 'model_type' or 'config'")
    return meta


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load any saved seqattn model directory, in eval mode."""
    path = Path(path)
    meta = read_model_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelDirError(f"{path} is incomplete: {WEIGHTS_FILE} is missing")
    skeleton = check_model_dir(path, meta)
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as error:  # safetensors raises its own error types for files it cannot parse
        raise ModelDirError(f"cannot read {weights}: {error}") from None
    return _fill(skeleton, state, weights).to(device).eval()
