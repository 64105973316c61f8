"""Shared helpers for the benchmarks in tools/: timing, peak-RSS sampling, subprocess workers, output files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path


def current_rss_mib(pid: int | str = "self") -> float:
    """Resident set size of this process, or of ``pid``, in MiB (OSError once that process is gone)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """Samples this process's RSS every millisecond in a thread; ``peak`` is the maximum seen."""

    def __init__(self):
        self.peak, self._stop = current_rss_mib(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss_mib())
            self._stop.wait(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss_mib())


def median_range(values: list[float]) -> dict:
    """Median, minimum, maximum and the values themselves: one figure over repeated runs."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": list(values)}


def timed(fn, reps: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def peak_above_baseline(fn) -> float:
    """MiB of RSS above the level just before ``fn`` runs. Call it first in a fresh process, before any
    warm-up: afterwards the allocator holds freed memory and the figure would undercount."""
    baseline = current_rss_mib()
    with PeakRss() as rss:
        fn()
    return rss.peak - baseline


def median_ms(times: list[float] | None):
    return statistics.median(times) * 1e3 if times else None


# glibc serves allocations above its (dynamic, at most 32 MiB) mmap threshold with fresh mmaps, so every large
# temporary is page-faulted and zeroed again on each call. Raising the threshold keeps freed memory for reuse,
# which is what `seqattn` commands do at start-up (seqattn.utils.malloc); benchmarks use it unless told not to.
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**31 - 1), "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}


def run_worker(script: str, args: list[str], timeout: float, tuned_malloc: bool = True) -> dict:
    """Run ``script --worker ...`` in a fresh interpreter; its last stdout line is a JSON result."""
    env = {**os.environ, **(TUNED_MALLOC if tuned_malloc else {})}
    try:
        proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=timeout,
                              env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return {"error": f"exit {proc.returncode}: {last}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gpu_name(device: str) -> str | None:
    """The GPU's name for a ``cuda[:N]`` device, None for the CPU."""
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None


def meta(argv: list[str], threads: int, reps: int) -> dict:
    import torch

    return {
        "command": " ".join([Path(argv[0]).as_posix()] + argv[1:]),
        "machine": f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "threads": threads,
        "reps": reps,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def write_outputs(out_dir: str, payload: dict, table: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    (out / "results.md").write_text(table)
    print(table)


def matmul_gflops(threads: int, size: int = 2048, reps: int = 7) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9
