"""Training checkpoints: a model directory per save plus ``training_state.pt``, written atomically.

``checkpoints/update_00001000/`` holds ``config.json``, ``model.safetensors``, ``README.md`` and
``training_state.pt`` (optimizer, scheduler, counters, data position; loadable with
``torch.load(weights_only=True)``). ``LAST`` and ``BEST`` name the newest and the best directory, and the
links ``last`` and ``best`` beside ``checkpoints/`` point at them, so ``load_model(OUT/best)`` works. Rotation
keeps the last ``keep_last`` and the best. Every file is written through a temporary directory and a rename,
so an interrupted save leaves the previous checkpoints untouched.
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from seqattn.models.io import WEIGHTS_FILE, save_model
from seqattn.models.validation import tied_names
from seqattn.utils.atomic import atomic_write_text

STATE_FILE = "training_state.pt"


class CheckpointManager:
    def __init__(self, directory: str | Path, keep_last: int = 3):
        self.directory = Path(directory)
        self.keep_last = max(1, keep_last)

    def remove_stale(self) -> list[Path]:
        """Clean what a killed save left behind; called before resuming. A ``.update_*.tmp`` staging directory
        and a ``.update_*.deleting`` rotated-out one are deleted. A ``.update_N.old-PID`` directory (the previous
        copy, moved aside just before the new one was renamed in) is put back if ``update_N`` is missing, else
        deleted. Returns what was removed."""
        removed = []
        for path in sorted(self.directory.glob(".update_*")):
            if not path.is_dir():
                continue
            if ".old-" in path.name:
                target = self.directory / path.name[1:].split(".old-")[0]
                if not target.exists():
                    os.replace(path, target)
                    continue
            elif not path.name.endswith((".tmp", ".deleting")):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        return removed

    def _complete(self, path: Path) -> bool:
        return all((path / name).is_file() for name in ("config.json", WEIGHTS_FILE, STATE_FILE))

    def save(
        self,
        model,
        state: dict,
        step: int,
        metric: float | None = None,
        *,
        higher_is_better=False,
        extra_files: dict | None = None,
        command: str | None = None,
    ) -> Path:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        name = f"update_{step:08d}"
        files = dict(extra_files or {})
        files[STATE_FILE] = buffer.getvalue()
        path = save_model(model, self.directory / name, extra_files=files, command=command)
        atomic_write_text(self.directory / "LAST", name + "\n")
        if metric is not None:
            best = self.best_metric()
            if best is None or (metric > best if higher_is_better else metric < best):
                atomic_write_text(self.directory / "BEST", f"{name} {metric}\n")
        self._rotate()
        self._link_pointers()
        return path

    def _link_pointers(self) -> None:
        """``last`` and ``best`` next to ``checkpoints/``: relative links to the directories LAST and BEST name
        (``best`` falls back to the newest while nothing has been validated), each replaced atomically."""
        for link, target in (("last", self.latest()), ("best", self.best() or self.latest())):
            if target is None:
                continue
            path = self.directory.parent / link
            if path.exists() and not path.is_symlink():
                continue  # a directory the user made: never replaced
            staging = path.with_name(f".{link}.{os.getpid()}")
            staging.unlink(missing_ok=True)
            os.symlink(Path(self.directory.name) / target.name, staging)
            os.replace(staging, path)

    def mark_best(self, path: Path) -> None:
        """Name ``path`` the best checkpoint without a metric (a run with no validation data keeps its final
        model as ``BEST``; a later validated save with any metric replaces it)."""
        atomic_write_text(self.directory / "BEST", f"{path.name}\n")
        self._link_pointers()

    def best_metric(self) -> float | None:
        best = self.directory / "BEST"
        if not best.is_file():
            return None
        parts = best.read_text().split()
        return float(parts[1]) if len(parts) > 1 else None

    def best(self) -> Path | None:
        best = self.directory / "BEST"
        if not best.is_file():
            return None
        path = self.directory / best.read_text().split()[0]
        return path if self._complete(path) else None

    def _rotate(self) -> None:
        keep = {p.name for p in (self.latest(), self.best()) if p is not None}
        saves = sorted(p for p in self.directory.glob("update_*") if p.is_dir())
        keep.update(p.name for p in saves[-self.keep_last :])
        for path in saves:
            if path.name not in keep:
                # rename first (atomic), then delete: a kill mid-delete leaves a hidden .deleting directory,
                # never a half-deleted update_* that looks like a checkpoint
                doomed = path.with_name(f".{path.name}.deleting")
                os.replace(path, doomed)
                shutil.rmtree(doomed, ignore_errors=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint (``LAST`` if intact, else the newest complete directory)."""
        last = self.directory / "LAST"
        if last.is_file():
            path = self.directory / last.read_text().strip()
            if self._complete(path):
                return path
        for path in sorted(self.directory.glob("update_*"), reverse=True):
            if path.is_dir() and self._complete(path):
                return path
        return None


def load_checkpoint(path: Path, model: torch.nn.Module) -> dict:
    """Load weights into ``model`` and return the training state (no pickled code is executed)."""
    missing, unexpected = model.load_state_dict(load_file(str(path / WEIGHTS_FILE)), strict=False)
    missing = sorted(set(missing) - tied_names(model))  # tied weights are saved once and re-tied already
    if missing or unexpected:
        raise RuntimeError(
            f"{path / WEIGHTS_FILE} does not match the model: missing {missing}, unexpected {sorted(unexpected)}"
        )
    return torch.load(path / STATE_FILE, weights_only=True, map_location="cpu")
