"""Progress bar, console/file log lines and tensorboard scalars for training loops (main rank only)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm


class TrainMonitor:
    def __init__(self, output_dir: Path, enabled: bool, total: int, initial: int, desc: str, tensorboard: bool = True):
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="upd", disable=not enabled, dynamic_ncols=True)
        self.writer = None
        self.log_file = self.trace_file = None
        if enabled:
            output_dir.mkdir(parents=True, exist_ok=True)
            self.log_file = open(output_dir / "train.log", "a", encoding="utf-8")
            self.trace_file = open(output_dir / "updates.jsonl", "a", encoding="utf-8")
            if tensorboard:
                from seqattn.utils.extras import require

                summary = require("torch.utils.tensorboard", "train", "run.tensorboard=true",
                                  " (or set run.tensorboard=false)")
                self.writer = summary.SummaryWriter(str(output_dir / "tensorboard"))

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        tqdm.write(line)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def scalars(self, step: int, values: dict, prefix: str = "train") -> None:
        if not self.enabled:
            return
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
            self.writer.flush()
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        self.message(f"{prefix} update {step}: {shown}")
        self.log_file.write(json.dumps({"prefix": prefix, "update": step, **values}) + "\n")
        self.log_file.flush()

    def trace(self, step: int, epoch: int, batches: list[int], applied: bool) -> None:
        """One line per update in ``updates.jsonl``: which micro-batches of which epoch it consumed, and whether
        it was applied (or skipped as non-finite). After a resume, redone updates appear again; the last line
        for an update is the one whose weights survive."""
        if not self.enabled:
            return
        self.trace_file.write(json.dumps({"update": step, "epoch": epoch, "batches": batches,
                                          "applied": applied}) + "\n")
        self.trace_file.flush()

    def advance(self, updates: int = 1, postfix: dict | None = None) -> None:
        """Move the bar on by ``updates``; ``postfix`` (host numbers) replaces what it shows beside."""
        if not self.enabled:
            return
        if updates:
            self.bar.update(updates)
        if postfix:
            self.bar.set_postfix({k: f"{v:.3g}" if isinstance(v, float) else v for k, v in postfix.items()},
                                 refresh=False)

    def close(self) -> None:
        if not self.enabled:
            return
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.log_file.close()
        self.trace_file.close()
