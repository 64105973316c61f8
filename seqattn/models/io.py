"""Model directories: ``config.json`` + ``model.safetensors`` (+ tokenizer files, ``README.md`` metadata).

Loading never unpickles: weights come from safetensors and the config is JSON. Which class to build is
read from ``config.json``'s ``model_type`` through an explicit table of this package's own classes.
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
from seqattn.version import __version__
from seqattn.utils.atomic import atomic_directory

from .lm import LMConfig, TransformerLM
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


def build_model(model_type: str, config: dict) -> torch.nn.Module:
    if model_type in ("wav2vec2_pretraining", "wav2vec2_ctc", "wav2vec2"):
        cfg = Wav2Vec2Config.from_dict(config)
        if model_type == "wav2vec2_pretraining":
            return Wav2Vec2ForPretraining(cfg)
        if model_type == "wav2vec2_ctc":
            return Wav2Vec2ForCTC(cfg)
        return Wav2Vec2Model(cfg)
    if model_type == "transformer_lm":
        return TransformerLM(LMConfig.from_saved(config))
    raise ModelDirError(f"unknown model_type {model_type!r} in {CONFIG_FILE}")


def save_model(model: torch.nn.Module, path: str | os.PathLike, *, extra_files: dict | None = None,
               command: str | None = None, notes: str = "") -> Path:
    """Write a complete model directory atomically (the old directory stays intact until the new is complete).

    ``extra_files`` maps file names to a ``pathlib.Path`` to copy (tokenizer files) or to ``str``/``bytes`` contents.
    """
    path = Path(path)
    model_type = model_type_of(model)
    config = {"model_type": model_type, "seqattn_version": __version__, "config": model.config.to_dict()}
    tied = tied_keys(model)
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


def tied_keys(model: torch.nn.Module) -> set[str]:
    """State-dict keys that share storage with an earlier key (tied embeddings): saved once, under the first
    name, and re-tied by the model's constructor on load."""
    seen, tied = set(), set()
    for key, value in model.state_dict().items():
        pointer = value.data_ptr()
        if pointer in seen and value.numel():
            tied.add(key)
        seen.add(pointer)
    return tied


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
    model = build_model(meta["model_type"], meta["config"])
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as error:  # safetensors raises its own error types for truncated/corrupt files
        raise ModelDirError(f"cannot read {weights}: {error}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = sorted(set(missing) - tied_keys(model))
    if missing or unexpected:
        raise ModelDirError(f"{weights} does not match its config: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    return model.to(device).eval()
