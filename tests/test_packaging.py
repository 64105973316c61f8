"""The tested set of packages: pyproject.toml keeps ranges, tools/requirements.lock pins, the venv matches it."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "tools" / "requirements.lock"
sys.path.insert(0, str(REPO / "tools"))
import check_lock


def _requirement_names(requirements):
    return {check_lock.canonical(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requirements}


def test_pyproject_declares_ranges_and_the_lock_pins_every_requirement():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [r for r in project["dependencies"] if "==" in r], "pyproject.toml keeps ranges; pin in the lock"
    pins = check_lock.read_lock(LOCK)
    wanted = _requirement_names(project["dependencies"])
    for extra in ("test", "recipes", "decode", "bench", "train", "analysis", "all"):
        wanted |= _requirement_names(project["optional-dependencies"][extra])
    assert sorted(wanted - set(pins)) == []
    assert pins["babel"] and pins["torch"] and pins["kenlm"]  # the demo's text source and the KenLM sdist


def test_the_lock_header_says_how_to_regenerate_it():
    header = [line for line in LOCK.read_text().splitlines() if line.startswith("#")]
    assert any("bash tools/lock_env.sh" in line for line in header)


def test_drift_from_the_lock_is_reported_by_name():
    pins = {"babel": "2.18.0", "numpy": "2.4.6"}
    assert check_lock.differences(pins, {"babel": "2.18.0", "numpy": "2.4.6", "seqattn": "0.1.0"}) == []
    assert check_lock.differences(pins, {"babel": "2.19.0", "numpy": "2.4.6", "extra-pkg": "1.0"}) == [
        "babel==2.19.0 is installed but the lock pins babel==2.18.0",
        "extra-pkg==1.0 is installed but not in the lock"]
    assert check_lock.canonical("Foo_Bar.baz") == "foo-bar-baz"


def test_a_malformed_lock_line_names_file_and_line(tmp_path):
    bad = tmp_path / "requirements.lock"
    bad.write_text("# header\nbabel==2.18.0\nnumpy>=2\n")
    with pytest.raises(SystemExit, match=r"requirements.lock:3: expected 'name==version'"):
        check_lock.read_lock(bad)


@pytest.mark.skipif(Path(sys.prefix).resolve() != (REPO / ".venv").resolve(),
                    reason="runs in the project's own .venv (make test), which tools/setup_env.sh builds from the lock")
def test_the_project_venv_matches_the_lock():
    result = subprocess.run([sys.executable, str(REPO / "tools" / "check_lock.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
