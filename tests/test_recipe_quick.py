"""The demo recipe's --quick smoke run: every stage on a tiny subset, then a re-run that skips done stages."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "indic_synth" / "asr"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (tools/install_system_deps.sh)")
def test_demo_recipe_quick(tmp_path):
    pytest.importorskip("babel", reason="babel (the recipe's text source) is not installed")
    for name in ("data_quick", "exp_quick"):
        shutil.rmtree(RECIPE / name, ignore_errors=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.run(["bash", "run.sh", "--quick", "true"], cwd=RECIPE, capture_output=True, text=True,
                           timeout=600, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (RECIPE / "exp_quick" / "pretrain" / "checkpoints" / "LAST").is_file()
    for lang in ("hi", "ta"):
        assert len((RECIPE / "data_quick" / f"train_{lang}" / "wav.scp").read_text().splitlines()) == 6
    assert "train update 20" in (RECIPE / "exp_quick" / "pretrain" / "train.log").read_text()
    second = subprocess.run(["bash", "run.sh", "--quick", "true", "--stage", "1"], cwd=RECIPE, capture_output=True,
                            text=True, timeout=300, env=env)
    assert second.returncode == 0 and second.stdout.count("already done") == 2
    bad = subprocess.run(["bash", "run.sh", "--quick", "true", "--bogus", "1"], cwd=RECIPE, capture_output=True,
                         text=True, timeout=60, env=env)
    assert bad.returncode != 0 and "unknown option --bogus" in bad.stderr
