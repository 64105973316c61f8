"""Model files never run code: a crafted pickle in every path a user can pass is refused (its payload would
create a file, which must not appear); weights are safetensors; no source calls torch.load unsafely."""
import ast
import json
import os
from pathlib import Path

import pytest
import torch

from seqattn.cli.main import main as cli_main
from seqattn.models.io import save_model
from seqattn.models.lm import TransformerLM, presets
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPretraining, tiny

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this would run ``touch WITNESS``."""

    def __init__(self, witness: Path):
        self.witness = witness

    def __reduce__(self):
        return (os.system, (f"touch {self.witness}",))


def evil_pickle(path: Path, witness: Path, wrap=lambda p: p) -> Path:
    torch.save(wrap(Payload(witness)), path)
    return path


def test_resume_from_a_checkpoint_with_a_malicious_training_state(tmp_path, capsys):
    witness = tmp_path / "pwned"
    text = tmp_path / "t.txt"
    text.write_text("abc def\n" * 200)
    out = tmp_path / "lm"
    args = [
        "train-lm",
        str(REPO / "recipes/lm/tinyshakespeare_char.yaml"),
        f"data.train=[{text}]",
        f"run.output_dir={out}",
        "model.dim=32",
        "model.num_layers=1",
        "model.attention.local.heads=4",
        "model.attention.local.window_left=8",
        "model.max_context=16",
        "data.seq_len=16",
        "data.batch_size=2",
        "optim.max_updates=2",
        "run.save_every=2",
        "run.tensorboard=false",
    ]
    assert cli_main(args) == 0
    state = out / "checkpoints" / "update_00000002" / "training_state.pt"
    evil_pickle(state, witness, lambda p: {"optimizer": p, "scheduler": {}, "position": {}, "config": ""})
    capsys.readouterr()
    code = cli_main(args[:-4] + ["optim.max_updates=4", "run.save_every=2", "run.tensorboard=false"])
    err = capsys.readouterr().err
    assert (
        code == 2
        and "cannot resume from" in err
        and "GLOBAL posix.system" in err
        and "nothing in it was executed" in err
    )
    assert not witness.exists()


@pytest.mark.parametrize("layout", ["fairseq", "hf-bin", "fairseq-nested"])
def test_malicious_checkpoints_are_refused_at_import(tmp_path, capsys, layout):
    witness = tmp_path / "pwned"
    if layout == "fairseq":
        source = evil_pickle(tmp_path / "evil.pt", witness, lambda p: {"model": {}, "cfg": p})
        argv = ["convert", "fairseq", str(source), str(tmp_path / "out")]
    elif layout == "fairseq-nested":
        source = evil_pickle(
            tmp_path / "evil.pt", witness, lambda p: {"model": {"w": torch.zeros(1)}, "args": None, "extra": [[p]]}
        )
        argv = ["convert", "fairseq", str(source), str(tmp_path / "out")]
    else:
        hf = tmp_path / "hf"
        hf.mkdir()
        transformers = pytest.importorskip("transformers")
        config = transformers.Wav2Vec2Config(
            vocab_size=2,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            architectures=["Wav2Vec2ForCTC"],
        )
        config.to_json_file(str(hf / "config.json"))
        (hf / "vocab.json").write_text(json.dumps({"<pad>": 0, "a": 1}))
        evil_pickle(hf / "pytorch_model.bin", witness, lambda p: {"w": p})
        argv = ["convert", "hf-import", str(hf), str(tmp_path / "out")]
    assert cli_main(argv) == 2
    assert not witness.exists() and not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert "system" in err or "cannot be read safely" in err


def test_model_directories_hold_safetensors_and_json_only(tmp_path):
    for model in (Wav2Vec2ForCTC(tiny(vocab_size=5)), Wav2Vec2ForPretraining(tiny()), TransformerLM(presets.tiny())):
        directory = save_model(model, tmp_path / type(model).__name__)
        assert sorted(p.name for p in directory.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_a_pickle_renamed_to_safetensors_is_refused_without_running(tmp_path, capsys):
    witness = tmp_path / "pwned"
    directory = save_model(TransformerLM(presets.tiny()), tmp_path / "lm")
    evil_pickle(directory / "model.safetensors", witness)
    (tmp_path / "t.txt").write_text("x\n")
    assert cli_main(["eval-lm", str(directory), str(tmp_path / "t.txt")]) == 2
    assert not witness.exists() and "cannot read" in capsys.readouterr().err


def unsafe_loads(root: Path) -> list[str]:
    """Every torch.load / pickle.load(s) / numpy allow_pickle call in the package that is not explicitly safe."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            where = f"{path.relative_to(root.parent)}:{node.lineno}"
            if name.endswith("torch.load") and keywords.get("weights_only") != "True":
                problems.append(f"{where}: {ast.unparse(node)}")
            if name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
                problems.append(f"{where}: {ast.unparse(node)}")
            if name.endswith("np.load") and keywords.get("allow_pickle", "False") != "False":
                problems.append(f"{where}: {ast.unparse(node)}")
    return problems


def test_no_source_loads_pickles_unsafely():
    assert unsafe_loads(REPO / "seqattn") == []
    # the scan itself finds an unsafe call
    probe = REPO / "tests" / "_probe_pkg"
    try:
        probe.mkdir()
        (probe / "bad.py").write_text("import torch\nstate = torch.load('x.pt')\n")
        assert len(unsafe_loads(probe)) == 1
    finally:
        (probe / "bad.py").unlink(missing_ok=True)
        probe.rmdir()


def test_piped_wav_scp_runs_only_with_pipes_allowed(tmp_path, capsys):
    """Kaldi semantics: an entry ending in '|' is a shell command; --no-pipes turns it into a clear error
    and nothing runs."""
    from seqattn.data.text import CharVocabulary

    vocab = CharVocabulary.build(["ab"])
    model_dir = save_model(
        Wav2Vec2ForCTC(tiny(vocab_size=len(vocab))), tmp_path / "m", extra_files={"tokens.json": vocab.to_json()}
    )
    witness = tmp_path / "ran"
    data = tmp_path / "d"
    data.mkdir()
    (data / "wav.scp").write_text(f"u1 touch {witness} && sox -n -r 16000 -t wav - trim 0 1 |\n")
    (data / "utt2spk").write_text("u1 s\n")
    code = cli_main(
        [
            "transcribe",
            str(model_dir),
            "--data-dir",
            str(data),
            "--no-pipes",
            "--output-dir",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    assert code == 1 and not witness.exists()
    assert "pipe sources are disabled (--no-pipes)" in (tmp_path / "o" / "failed.txt").read_text()
