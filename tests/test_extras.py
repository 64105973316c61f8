"""Optional dependencies: the core installs without them, and a missing one is a one-line error naming the
extra that brings it."""
import sys
from pathlib import Path

import pytest
import tomllib

from seqattn.cli.main import main as cli_main
from seqattn.utils.extras import MissingExtraError

REPO = Path(__file__).resolve().parents[1]


def test_heavy_packages_are_extras_not_core_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for package in ("tensorboard", "matplotlib", "scipy", "scikit-learn", "transformers", "flashlight"):
        assert package not in core, package
    extras = project["optional-dependencies"]
    assert "tensorboard>=2.12" in extras["train"] and "scikit-learn>=1.2" in extras["analysis"]


def test_training_without_tensorboard_names_the_extra(tmp_path, monkeypatch):
    from seqattn.train.monitor import TrainMonitor

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(MissingExtraError, match=r'run.tensorboard=true needs tensorboard, which is not installed: '
                                                r'pip install "seqattn\[train\]" \(or set run.tensorboard=false\)'):
        TrainMonitor(tmp_path, True, 10, 0, "test", tensorboard=True)
    TrainMonitor(tmp_path, True, 10, 0, "test", tensorboard=False).close()  # without the logs it runs


@pytest.mark.parametrize("module, package", [("sklearn", "scikit-learn"), ("matplotlib", "matplotlib"),
                                             ("scipy", "scipy")])
def test_analysis_without_its_packages_names_the_extra(tmp_path, monkeypatch, capsys, module, package):
    monkeypatch.setitem(sys.modules, module, None)
    assert cli_main(["analyze", "layers", str(tmp_path / "model"), str(tmp_path), "--out-dir",
                     str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f'seqattn analyze needs {package}, which is not installed: pip install "seqattn[analysis]"' in err
    assert err.count("\n") == 1


def test_interop_extras_name_themselves(tmp_path, monkeypatch, capsys):
    """HF datasets, ONNX and hub ids each need their own extra; without it the command says which."""
    monkeypatch.setitem(sys.modules, "datasets", None)
    from seqattn.data.hf_datasets import DatasetSpec, open_dataset

    open_dataset.cache_clear()
    with pytest.raises(MissingExtraError, match=r'reading HF datasets needs datasets.*"seqattn\[datasets\]"'):
        open_dataset(DatasetSpec.parse(str(tmp_path / "x.parquet")))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    (tmp_path / "m.onnx").write_bytes(b"")
    assert cli_main(["transcribe", str(tmp_path / "m.onnx"), str(tmp_path)]) == 2
    assert 'needs onnxruntime, which is not installed: pip install "seqattn[onnx]"' in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    assert cli_main(["convert", "hf-import", "someorg/model", str(tmp_path / "out")]) == 2
    assert 'needs huggingface_hub, which is not installed: pip install "seqattn[hub]"' in capsys.readouterr().err
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"onnx", "datasets", "hub"} <= set(project)
