"""--quick smoke runs of the benchmarks: they run, time the competitors, and write JSON + markdown."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # minutes of training, recipes or benchmark runs: not in make test-fast

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _run(script, out, *args):
    result = subprocess.run([sys.executable, str(TOOLS / script), "--quick", "--out-dir", str(out), *args],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_bench_attention_quick(tmp_path):
    pytest.importorskip("local_attention", reason="bench extra (local-attention) not installed")
    pytest.importorskip("routing_transformer", reason="bench extra (routing-transformer) not installed")
    methods = ["seqattn_local", "seqattn_local_blocked", "seqattn_global", "seqattn_local_per_head",
               "lucidrains_local", "sdpa_dense", "seqattn_routing", "lucidrains_routing"]
    payload, table = _run("bench_attention.py", tmp_path, "--methods", *methods)
    rows = {(r["method"], r["n"]): r for r in payload["rows"]}
    for method in methods:
        row = rows[(method, 1024)]
        assert "error" not in row, row
        assert len(row["forward_s"]) == 2 and len(row["forward_backward_s"]) == 2
    summary = payload["summary"]
    assert summary["matmul_gflops"] > 0 and summary["local_vs_lucidrains_fwd_bwd"] > 0
    assert "| seqattn local L=R=128 |" in table and "## Targets" in table
    assert summary["narrow_vs_wide_fwd_bwd"]["seqattn_local_per_head"] > 0 and "as a share of L=R=128" in table
    assert summary["global_vs_local_fwd_bwd"]["1024"]["bidirectional"] > 0 and "global heads, fwd+bwd" in table
    # the same window through the fused and the blocked kernel (the blocked worker runs with SEQATTN_NATIVE=0)
    assert summary["fused_vs_blocked_fwd_bwd"]["1024"]["128"] > 0 and "fused CPU kernel against the blocked" in table
    assert "SEQATTN_NATIVE=0" in rows[("seqattn_local_blocked", 1024)]["cpu_kernel"]


def test_bench_wav2vec2_quick(tmp_path):
    pytest.importorskip("transformers", reason="test extra (transformers) not installed")
    payload, table = _run("bench_wav2vec2.py", tmp_path)
    impls = {r["impl"]: r for r in payload["rows"]}
    assert set(impls) == {"hf", "seqattn_full", "seqattn_local", "seqattn_fbank_local", "seqattn_fbank_bestrq",
                          "seqattn_fbank_conv_bestrq"}
    assert all("error" not in r and len(r["step_s"]) == 2 for r in impls.values()), impls
    assert "HF time / seqattn time" in table and "raw-CNN local time / fbank time" in table


def test_bench_front_ends_quick(tmp_path):
    payload, table = _run("bench_front_ends.py", tmp_path)
    rows = {r["front_end"]: r for r in payload["rows"]}
    assert set(rows) == {"stack", "conv32", "conv64", "conv128"}
    assert all(len(r["step_s"]) == 2 and r["median_ms"] > 0 for r in rows.values())
    assert rows["stack"]["ratio_to_stack"] == 1.0
    assert rows["stack"]["params"] < rows["conv32"]["params"] < rows["conv64"]["params"] < rows["conv128"]["params"]
    assert "| two 3x3 stride-2 convolutions, 64 channels |" in table


def test_bench_transcribe_quick(tmp_path):
    pytest.importorskip("transformers", reason="test extra (transformers) not installed")
    payload, table = _run("bench_transcribe.py", tmp_path)
    rows = {(r["impl"], r["seconds"]): r for r in payload["rows"]}
    pytest.importorskip("onnxruntime", reason="onnx extra not installed")
    impls = ("seqattn_local", "seqattn_fbank", "seqattn_onnx", "hf_pipeline")
    assert set(rows) == {(impl, 12.0) for impl in impls}
    for row in rows.values():
        assert "error" not in row, row
        assert len(row["times_s"]) == 2 and row["peak_rss_mib"] > 0 and row["transcript_chars"] >= 0
    # the same weights through onnxruntime: the same greedy transcript
    assert rows[("seqattn_onnx", 12.0)]["transcript_chars"] == rows[("seqattn_local", 12.0)]["transcript_chars"]
    assert "HF time / seqattn time" in table and "PyTorch time / onnxruntime time" in table and "RTF" in table
    assert "HF time / seqattn fbank time" in table and "| seqattn, fbank front end at 40 ms" in table


def test_bench_lm_medians_summarise_runs_and_keep_failures():
    sys.path.insert(0, str(TOOLS))
    import bench_lm

    rows = [
        {"variant": "a", "seed": s, "val_loss": v, "updates": u}
        for s, v, u in [(0, 2.0, 10), (1, 1.5, 30), (2, 1.7, 20)]
    ]
    rows += [{"variant": "b", "seed": 0, "val_loss": 1.0, "updates": 5}, {"variant": "b", "seed": 1, "error": "boom"}]
    a, b = bench_lm.medians(rows, ["val_loss", "updates"])
    assert (a["variant"], a["runs"], a["val_loss"], a["val_loss_min"], a["val_loss_max"], a["updates"]) == (
        "a",
        3,
        1.7,
        1.5,
        2.0,
        20,
    )
    assert b == {"variant": "b", "error": "boom"}  # a failed run is never hidden behind a median
    assert bench_lm.spread(a, "val_loss", 2) == "1.70 (1.50–2.00)"


def test_bench_reliability_quick_reports_medians_over_runs(tmp_path):
    """Two runs of each load test. many-files reads RSS and throughput from the CLI's progress bar inside one
    run; long-audio runs streamed and one pass in each round, and one pass gives the same CTM every time."""
    payload, table = _run("bench_reliability.py", tmp_path, "many-files", "long-audio", "--runs", "2")
    files = payload["many_files"]
    assert files["returncode"] == 0 and len(files["runs"]) == 2
    for run in files["runs"]:
        assert [int(mark) for mark in run["marks"]] == [20, 40, 180, 200]
        assert run["marks"]["20"]["done"] >= 20 and run["marks"]["200"]["done"] == 200
        assert 0 < run["marks"]["20"]["seconds"] < run["marks"]["200"]["seconds"] <= run["wall_s"]
        assert run["rss_ratio"] == pytest.approx(run["rss_all_mib"] / run["rss_first_tenth_mib"])
        assert run["files_per_s_last_tenth"] > 0  # 20 files take several redraws of the bar
    assert len(files["summary"]["rss_ratio"]["values"]) == 2
    result = payload["long_audio"]
    assert result["returncode"] == 0
    assert [(run["repeat"], run["mode"]) for run in result["runs"]] == [
        (r, m) for r in range(2) for m in ("streamed", "one pass", "streamed")
    ]
    summary = {(row["hours"], row["mode"]): row for row in result["summary"]}
    assert len(summary) == 3 and all(row["runs"] == 2 for row in summary.values())
    shortest = min(hours for hours, _ in summary)
    assert summary[(shortest, "one pass")]["same_as_streamed"] == [True, True]
    peaks = summary[(shortest, "streamed")]["peak_rss_mib"]
    assert peaks["min"] <= peaks["median"] <= peaks["max"] and len(peaks["values"]) == 2
    assert len(result["rss_ratio_longest_to_shortest"]["values"]) == 2
    assert "RSS ratio after 200 / after 20 files" in table and "per round" in table and "| streamed | 2 |" in table


def test_bench_gpu_quick_runs_on_the_cpu(tmp_path):
    """The GPU benchmark's code, exercised at tiny sizes on the CPU (tools/gpu_check.sh runs it on a GPU)."""
    payload, table = _run("bench_gpu.py", tmp_path, "--device", "cpu")
    timed = {r["method"] for r in payload["rows"] if "seconds" in r}
    assert timed == {
        "seqattn local +-32",
        "dense SDPA",
        "seqattn routed (clusters of 256)",
        "seqattn local +-32, chunked backend",
    }
    assert all(len(r["seconds"]) == 2 for r in payload["rows"] if "seconds" in r)
    assert "| seqattn local +-32 | +-32 | 2048 |" in table and "Growth of seqattn local" in table


def test_bench_routing_workers_train_and_score_every_variant(tmp_path):
    """Every variant's model trains and is scored by the function the benchmark's subprocesses call (the whole
    command runs in egs/longrange/lm's quick test)."""
    pytest.importorskip("routing_transformer", reason="bench extra (routing-transformer) not installed")
    sys.path.insert(0, str(TOOLS))
    try:
        import bench_routing
    finally:
        sys.path.remove(str(TOOLS))
    for variant in bench_routing.VARIANTS:
        result = bench_routing.train_worker(variant, "recall", 1024, 0, 0.5, 2, 1, str(tmp_path / "code"))
        assert result["steps"] >= 1 and result["answers"] == 64 and result["parameters"] > 0, result
        assert 0 <= result["accuracy"] <= 1 and result["peak_mib"] >= 0
    result = bench_routing.train_worker("block", "code", 1024, 0, 0.5, 2, 2048, str(tmp_path / "code"))
    assert result["bytes_beyond"] > 0 and result["loss_beyond"] > 0
    assert sum(result[f"bytes_{name}"] for name in ("novel", "within", "beyond")) == 2 * 1024


GPU_CHECK = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.sh"


def _gpu_check(out: Path, python: str, timeout: float) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "OUT": str(out), "PYTHON": python, "PYTEST_ADDOPTS": "-p no:xdist"}
    return subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True, timeout=timeout, env=env)


def test_gpu_check_runs_here_and_stops_where_no_gpu_is_visible(tmp_path):
    """tools/gpu_check.sh with this interpreter: every import it needs is there, the CUDA tests skip with
    their reason, and it stops there, saying why."""
    result = _gpu_check(tmp_path, sys.executable, 600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    steps = (tmp_path / "steps.txt").read_text()
    assert "MISSING" not in steps and "ok       soundfile" in steps and "no CUDA GPU visible" in steps
    assert " skipped" in (tmp_path / "cuda_tests.txt").read_text()


def test_gpu_check_names_missing_imports_and_runs_nothing(tmp_path):
    bare = getattr(sys, "_base_executable", None)  # the interpreter under the venv: no torch, no seqattn deps
    if not bare or subprocess.run([bare, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip("no interpreter without torch on this machine")
    result = _gpu_check(tmp_path, bare, 120)
    assert result.returncode == 2
    steps = (tmp_path / "steps.txt").read_text()
    assert "MISSING  torch" in steps and "nothing else was run" in steps
    assert not (tmp_path / "cuda_tests.txt").exists()


def test_bench_band_tuning_quick(tmp_path):
    from seqattn.nn import native_band

    if native_band._library() is None:
        pytest.skip(f"the fused kernel is unavailable: {native_band.describe()}")
    payload, table = _run("bench_band_tuning.py", tmp_path)
    assert {row["window"] for row in payload["block"]} == {8, 32, 64, 128}
    assert all(set(row["ms"]) == {"16", "32", "64"} and min(row["ms"].values()) > 0 for row in payload["block"])
    assert [row["keys"] for row in payload["native"]] == [129, 257, 385, 513]
    assert all(row["ms"]["plain"] > 0 and row["ms"]["streamed"] > 0 for row in payload["stream"])
    assert "| ±128 | 257 |" in table
