"""What a user meets first at the command line: help that shows defaults, and options that never swallow
or overwrite an input."""
import subprocess
import sys

import pytest

from seqattn.cli.main import build_parser
from seqattn.cli.main import main as cli_main


def _help(*command) -> str:
    result = subprocess.run([sys.executable, "-m", "seqattn.cli.main", *command, "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("command", [["transcribe"], ["analyze", "attention"], ["eval-lm"], ["convert", "localize"]])
def test_help_shows_defaults_and_no_doubled_percent_signs(command):
    text = " ".join(_help(*command).split())  # argparse wraps lines
    assert "%%" not in text
    assert "(default: " in text or "default: " in text


def test_help_defaults_are_the_real_ones():
    text = " ".join(_help("transcribe").split())
    assert "--pipe-timeout PIPE_TIMEOUT default: 120.0" in text and "--batch-size BATCH_SIZE utterances" in text
    assert "Kaldi-style %WER/%CER" in text
    assert build_parser().parse_args(["transcribe", "m"]).pipe_timeout == 120.0


def test_eval_lm_json_needs_a_path_and_never_overwrites_an_input(tmp_path, capsys):
    test, valid = tmp_path / "test.txt", tmp_path / "valid.txt"
    test.write_text("original test text\n")
    valid.write_text("valid\n")
    assert cli_main(["eval-lm", str(tmp_path / "model"), "--json", str(test), str(valid)]) == 2  # as reported
    assert "exists and is not an eval-lm report; refusing to overwrite it" in capsys.readouterr().err
    assert cli_main(["eval-lm", str(tmp_path / "model"), str(test), "--json", str(test)]) == 2
    assert "is also an input file" in capsys.readouterr().err
    assert test.read_text() == "original test text\n"
    with pytest.raises(SystemExit):  # --json alone: argparse wants its path
        build_parser().parse_args(["eval-lm", "m", str(valid), "--json"])
    args = build_parser().parse_args(["eval-lm", "m", "--json", "-", str(test), str(valid)])
    assert args.json == "-" and args.files == [str(test), str(valid)]


def test_word_lm_without_a_lexicon_is_refused(tmp_path, capsys):
    lm = tmp_path / "lm.arpa"
    lm.write_text("\\data\\\n")
    assert cli_main(["transcribe", str(tmp_path / "model"), str(tmp_path / "a.wav"), "--lm", str(lm)]) == 2
    assert "--lm needs --lexicon" in capsys.readouterr().err
