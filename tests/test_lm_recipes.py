"""The LM recipes' --quick smoke runs, offline: tiny Shakespeare from a local file, WikiText-103 from a zip
shaped like the real release, and the Indic LM on the ASR demo's text."""
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # minutes of training, recipes or benchmark runs: not in make test-fast

EGS = Path(__file__).resolve().parents[1] / "egs"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def run(recipe: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "run.sh", *args], cwd=recipe, capture_output=True, text=True, timeout=timeout,
                            env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_tinyshakespeare_recipe_offline(tmp_path):
    corpus = tmp_path / "input.txt"
    corpus.write_text("".join(f"CITIZEN {i % 5}:\nWe are accounted poor citizens, the patricians good.\n\n"
                              for i in range(400)))
    data, exp = tmp_path / "data", tmp_path / "exp"
    run(EGS / "tinyshakespeare" / "lm", "--corpus", str(corpus), "--quick", "true", "--variants", "routing,global",
        "--seeds", "1", "--data", str(data), "--exp", str(exp))
    assert (data / "train.txt").stat().st_size == int(0.9 * len(corpus.read_text()[:50000]))
    for name in ("routing_seed1", "global_seed1"):
        report = json.loads((exp / name / "eval" / "valid_sliding64_32.json").read_text())
        assert report["scheme"] == "sliding" and report["overall"]["tokens"] > 0
        assert (exp / name / "sample.txt").read_text().startswith("ROMEO:")
    assert json.loads((exp / "global_seed1" / "best" / "config.json").read_text())["config"]["attention"][
        "global_tokens"]["heads"] == 1
    results = (exp / "RESULTS.md").read_text()
    assert "| routing_seed1 |" in results and "sliding 64/32" in results and "blocks of 64" in results
    assert "## Over seeds" in results and "| global | 1 |" in results
    again = run(EGS / "tinyshakespeare" / "lm", "--corpus", str(corpus), "--quick", "true", "--variants",
                "routing,global", "--seeds", "1", "--data", str(data), "--exp", str(exp))
    assert again.stdout.count("already done") == 5


def test_longrange_recipe_quick(tmp_path):
    """Every stage of egs/longrange/lm for one variant: the code corpus, kernel speed, recall, code LM, RESULTS."""
    pytest.importorskip("routing_transformer", reason="bench extra (routing-transformer) not installed")
    data, exp = tmp_path / "data", tmp_path / "exp"
    run(EGS / "longrange" / "lm", "--quick", "true", "--variants", "block", "--data", str(data), "--exp", str(exp))
    manifest = json.loads((data / "code" / "manifest.json").read_text())
    assert manifest["splits"]["valid"]["files"][0]["file"] == "inspect.py"
    speed = {r["method"]: r for r in json.loads((exp / "speed" / "results.json").read_text())["speed"]}
    assert set(speed) == {"seqattn_block_routed_causal", "seqattn_routing_causal"}
    assert all("error" not in r and len(r["forward_backward_s"]) == 2 for r in speed.values()), speed
    recall = json.loads((exp / "recall" / "results.json").read_text())["rows"]
    code = json.loads((exp / "code" / "results.json").read_text())["rows"]
    assert [(r["task"], r["variant"]) for r in recall + code] == [("recall", "block"), ("code", "block")]
    assert all("error" not in r for r in recall + code), recall + code
    assert recall[0]["answers"] == 2 * 64 and code[0]["bytes_beyond"] > 0
    results = (exp / "RESULTS.md").read_text()
    assert "Associative recall" in results and "Code LM" in results and "Block-routed vs k-means" in results
    again = run(EGS / "longrange" / "lm", "--quick", "true", "--variants", "block", "--data", str(data), "--exp",
                str(exp))
    assert again.stdout.count("already done") == 5


def wikitext_fixture(path: Path) -> Path:
    """A zip laid out like wikitext-103-v1.zip: wikitext-103/wiki.{train,valid,test}.tokens, articles
    opened by ' = Title = ' lines, sections by ' = = Section = = ', blank lines between paragraphs."""
    def article(i: int) -> str:
        return (f" \n = Article {i} = \n \n The article number {i} is about the <unk> of robert , who was born in "
                f"{1800 + i} . \n \n = = History = = \n \n In @-@ depth text , with numbers like 1 @,@ 000 . \n")
    with zipfile.ZipFile(path, "w") as archive:
        for split, count in (("train", 40), ("valid", 5), ("test", 5)):
            archive.writestr(f"wikitext-103/wiki.{split}.tokens", "".join(article(i) for i in range(count)))
    return path


@pytest.mark.parametrize("units", ["word", "sentencepiece"])
def test_wikitext103_recipe_data_prep_and_stages_on_a_fixture(tmp_path, units):
    archive = wikitext_fixture(tmp_path / "wikitext-103-v1.zip")
    data, exp = tmp_path / "data", tmp_path / "exp"
    run(EGS / "wikitext103" / "lm", "--corpus-zip", str(archive), "--quick", "true", "--units", units,
        "--data", str(data), "--exp", str(exp))
    stats = json.loads((data / "stats.json").read_text())
    assert [stats[s]["articles"] for s in ("train", "valid", "test")] == [40, 5, 5]
    assert stats["train"]["words"] == 40 * len(
        " = Article 0 = The article number 0 is about the <unk> of robert , who was born in 1800 . "
        "= = History = = In @-@ depth text , with numbers like 1 @,@ 000 .".split())
    report = json.loads((exp / units / "eval" / "test_sliding64_32.json").read_text())
    assert report["overall"]["words"] == stats["test"]["words"] and report["overall"]["tokens"] > 0
    assert "Results: WikiText-103" in (exp / "RESULTS.md").read_text()


def test_wikitext_prep_rejects_a_zip_without_the_release_files(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("something/else.txt", "hello")
    result = subprocess.run(["bash", "run.sh", "--corpus-zip", str(tmp_path / "other.zip"), "--quick", "true",
                             "--data", str(tmp_path / "d"), "--exp", str(tmp_path / "e")],
                            cwd=EGS / "wikitext103" / "lm", capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode != 0 and "no wiki.train.tokens found" in result.stdout + result.stderr


def test_indic_lm_recipe_on_the_asr_demo_text(tmp_path):
    pytest.importorskip("babel", reason="babel (the ASR demo's text source) is not installed")
    data, exp = tmp_path / "data", tmp_path / "exp"
    run(EGS / "indic_synth" / "lm", "--quick", "true", "--data", str(data), "--exp", str(exp))
    for lang in ("hi", "ta"):
        report = json.loads((exp / "char" / "eval" / f"test_{lang}.json").read_text())
        assert report["overall"]["tokens"] > 0 and report["overall"]["bits_per_byte"] > 0
    train = (data / "train.txt").read_text(encoding="utf-8")
    assert any("\u0900" <= c <= "\u097f" for c in train) and any("\u0b80" <= c <= "\u0bff" for c in train)
    assert "test_ta.txt" in (exp / "RESULTS.md").read_text()
