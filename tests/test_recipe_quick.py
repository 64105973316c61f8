"""The demo recipe's --quick smoke run: every stage on a tiny subset, then a re-run that skips done stages."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "indic_synth" / "asr"
KENLM = Path(__file__).resolve().parents[1] / "tools" / "kenlm" / "bin" / "lmplz"


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="espeak-ng and sox are not installed (tools/install_system_deps.sh)")
def test_demo_recipe_quick(tmp_path):
    pytest.importorskip("babel", reason="babel (the recipe's text source) is not installed")
    data, exp = tmp_path / "data", tmp_path / "exp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = ["bash", "run.sh", "--quick", "true", "--data", str(data), "--exp", str(exp)]
    first = subprocess.run(args, cwd=RECIPE, capture_output=True, text=True, timeout=900, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert sorted(p.name for p in (exp / "done").iterdir()) == ["0", "1", "2", "3", "5", "6", "7", "8", "9"]
    for lang in ("hi", "ta", "bpy"):  # bpy: a voice whose text comes from another locale (Bengali script)
        assert len((data / f"train_{lang}" / "wav.scp").read_text().splitlines()) == 8
    for lang in ("hi", "ta"):
        for split in ("dev", "test"):
            assert len((data / f"{split}_{lang}" / "text").read_text(encoding="utf-8").splitlines()) == 4
        assert (exp / "decode" / "ft" / "greedy" / f"test_{lang}" / "wer").read_text().startswith("%WER")
        if KENLM.is_file():
            assert (exp / "decode" / "ft" / "lm" / f"test_{lang}" / "wer").read_text().startswith("%WER")
    assert len((data / "test_long_hi" / "segments").read_text().splitlines()) == 4
    assert all(line.endswith("|") for line in (data / "test_pipe_hi" / "wav.scp").read_text().splitlines())
    for fmt in ("srt", "ctm", "json"):
        assert (exp / "longform" / "one_pass" / f"long_hi.{fmt}").is_file()
    results = (exp / "RESULTS.md").read_text(encoding="utf-8")
    assert "| test_hi |" in results and "| test_pipe_hi |" in results and "## Time per stage" in results
    for name in ("attention_pretrain/attention.json", "attention_ft/w95.png", "layers_ft/layers.json",
                 "layers_pretrain/layer_probes.png", "codebook/codebook_dendrogram.png"):
        assert (exp / "analysis" / name).is_file(), name
    assert "## Analysis" in results and "| ft_local_distilled | 0.5 |" in results and "Codebook use" in results
    assert "train update 6" in (exp / "pretrain" / "train.log").read_text()
    second = subprocess.run(args + ["--stage", "1"], cwd=RECIPE, capture_output=True, text=True, timeout=300,
                            env=env)
    assert second.returncode == 0 and second.stdout.count("already done") == 8, second.stdout[-2000:]
    bad = subprocess.run(["bash", "run.sh", "--quick", "true", "--bogus", "1"], cwd=RECIPE, capture_output=True,
                         text=True, timeout=60, env=env)
    assert bad.returncode != 0 and "unknown option --bogus" in bad.stderr
