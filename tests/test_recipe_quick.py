"""The demo recipe: the text its held-out sets are built from, a failing stage, and the --quick smoke run
(every stage on a tiny subset, then a re-run that skips done stages)."""
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # minutes of training, recipes or benchmark runs: not in make test-fast

RECIPE = Path(__file__).resolve().parents[1] / "egs" / "indic_synth" / "asr"
KENLM = Path(__file__).resolve().parents[1] / "tools" / "kenlm" / "bin" / "lmplz"
QUICK = re.search(r'if \[ "\$quick" = true \]; then(.*?)\n(?:else|fi)', (RECIPE / "run.sh").read_text(), re.S).group(1)


def _quick(name):
    """A setting of run.sh's --quick block (the test follows the recipe rather than restating it)."""
    return re.search(rf"\b{name}=([^;\s]+)", QUICK).group(1)


@pytest.fixture()
def synthesize(monkeypatch):
    monkeypatch.syspath_prepend(str(RECIPE / "local"))
    sys.modules.pop("synthesize", None)
    import synthesize

    return synthesize


def _held_out_uncovered(synthesize, lang, train_utts, test_utts, train_words=(1, 4), test_words=(2, 6)):
    """Characters of the dev/test sentences that the training sentences lack (what the model cannot emit)."""
    train = synthesize.split_sentences(lang, "train", train_utts, 1, *train_words)
    known = synthesize.characters(" ".join(train))
    missing = set()
    for split in ("dev", "test"):
        for sentence in synthesize.split_sentences(lang, split, test_utts, 1, *test_words, train):
            assert sentence not in train
            missing |= synthesize.characters(sentence) - known
    return missing


def test_quick_held_out_characters_are_in_the_training_vocabulary(synthesize):
    """With the installed CLDR release: every dev/test character of the quick run is in its training text."""
    pytest.importorskip("babel", reason="babel (the recipe's text source) is not installed")
    for lang in _quick("asr_langs").split(","):
        assert _held_out_uncovered(synthesize, lang, int(_quick("train_utts")), int(_quick("test_utts"))) == set()


def test_held_out_coverage_holds_for_any_word_list(synthesize, monkeypatch):
    """Whatever another CLDR release holds (here: random Devanagari words with rare letters), held-out
    sentences only use characters of the training sentences. Drawing from the whole list, as before, fails."""
    letters = [chr(c) for c in range(0x0915, 0x0939)] + ["\u0902", "\u093e", "\u093f", "\u0940", "\u0947"]
    rng = random.Random(7)
    words = sorted({"".join(rng.choices(letters, k=rng.randint(2, 6))) for _ in range(600)})
    monkeypatch.setattr(synthesize, "vocabulary", lambda lang: words)
    for seed_words in ((1, 4), (1, 2)):
        assert _held_out_uncovered(synthesize, "hi", 8, 4, seed_words) == set()
    train = synthesize.split_sentences("hi", "train", 8, 1, 1, 4)
    known = synthesize.characters(" ".join(train))
    unrestricted = synthesize.sentences("hi", "dev", 4, 1, 2, 6, exclude=set(train))
    assert any(synthesize.characters(s) - known for s in unrestricted)  # the check above can fail


def test_a_restriction_that_removes_nothing_changes_no_sentence(synthesize, monkeypatch):
    """The full demo's training text covers its held-out words, so its dev/test sets (and RESULTS.md) stay
    those drawn without the restriction; only sentences with an uncovered word are redrawn."""
    words = [f"w{i}" for i in range(50)]
    monkeypatch.setattr(synthesize, "vocabulary", lambda lang: words)
    plain = synthesize.sentences("xx", "test", 20, 1, 2, 6)
    assert synthesize.sentences("xx", "test", 20, 1, 2, 6, allowed=set(words)) == plain
    partial = synthesize.sentences("xx", "test", 20, 1, 2, 6, allowed=set(words) - {"w3"})
    assert all("w3" not in s.split() for s in partial)
    assert [a for a, b in zip(plain, partial) if a == b] == [s for s in plain if "w3" not in s.split()]


def test_training_voice_sets_never_hold_a_test_voice(synthesize):
    """--train-voices many/mixed: 86 distinct variants, the classic 7 first, none of them a dev/test or
    out-of-domain voice or built on one (AnxiousAndy, RicishayMax*); the installed espeak-ng has them all, and
    a voice it lacks stops the synthesis with its name instead of silently speaking with the default voice."""
    many = [v.lower() for v in synthesize.MANY_TRAIN_VARIANTS]
    assert len(many) == len(set(many)) == 86 and synthesize.MANY_TRAIN_VARIANTS[:7] == synthesize.TRAIN_VARIANTS
    test_voices = [v.lower() for v in synthesize.HELDOUT_VARIANTS + synthesize.OOD_VOICES]
    assert not [(t, v) for t in test_voices for v in many if t == v or (len(t) > 2 and t in v)]
    assert synthesize.OTHER_TRAIN_VARIANTS == synthesize.MANY_TRAIN_VARIANTS[7:]
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (tools/install_system_deps.sh)")
    synthesize.check_variants(synthesize.MANY_TRAIN_VARIANTS + synthesize.HELDOUT_VARIANTS + synthesize.OOD_VOICES)
    with pytest.raises(SystemExit, match="lacks the voice variant.*no_such_voice"):
        synthesize.check_variants(["m1", "no_such_voice"])


def test_voices_set_a_held_out_splits_speakers_apart_from_its_text(synthesize, monkeypatch, tmp_path):
    """--voices ood speaks CLDR text with the out-of-domain voices at pitches outside the training range, and
    --text-source messages --voices heldout speaks messages with the dev/test voices, so each shift can be
    measured alone; auto keeps each text source's own voices, and a train split refuses the option."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (tools/install_system_deps.sh)")
    if not synthesize.message_sentences("hi"):
        pytest.skip("no translated Hindi messages under /usr/share/locale (tools/install_system_deps.sh)")

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["synthesize.py", "--out", str(tmp_path), "--langs", "hi", *args])
        synthesize.main()
        rows = (tmp_path / f"{args[1]}_hi" / "utt2spk").read_text().split("\n")
        return {line.split()[1].split("-", 1)[1] for line in rows if line}

    heldout, ood = set(synthesize.HELDOUT_VARIANTS), set(synthesize.OOD_VOICES)
    assert run("--split", "train", "--utts", "12", "--words", "1", "3") <= set(synthesize.TRAIN_VARIANTS)
    assert run("--split", "test_voiceshift", "--utts", "4", "--voices", "ood") <= ood
    assert run("--split", "test_textshift", "--utts", "4", "--text-source", "messages", "--voices",
               "heldout") <= heldout
    assert run("--split", "test_ood", "--utts", "4", "--text-source", "messages") <= ood
    assert run("--split", "test", "--utts", "4") <= heldout
    with pytest.raises(SystemExit, match="held-out test sets only"):
        run("--split", "train", "--utts", "2", "--voices", "ood")


def test_speech_is_synthesised_in_the_nukta_spelling_each_voice_reads(synthesize):
    """NFC keeps Bengali YYA decomposed (ya + nukta), which espeak-ng's Bengali and Assamese rules do not read
    (রাশিয়া came out as "r'aSi"): for those voices the synthesiser composes every letter + nukta pair and
    changes nothing else; Bishnupriya (which reads the decomposed pair and spells the precomposed letter out)
    and the other voices get the text as it is."""
    import unicodedata

    word = unicodedata.normalize("NFC", "\u09b0\u09be\u09b6\u09bf\u09df\u09be")  # রাশিয়া
    precomposed = "\u09b0\u09be\u09b6\u09bf\u09df\u09be"
    assert word == "\u09b0\u09be\u09b6\u09bf\u09af\u09bc\u09be"
    assert synthesize.speakable(word, "bn") == synthesize.speakable(word, "as") == precomposed
    assert synthesize.speakable(word, "bpy") == word
    mixed = word + " \u0995\u09bc \u09a1\u09bc"  # ka + nukta has no code point; dda + nukta has (U+09DC)
    assert synthesize.speakable(mixed, "bn") == precomposed + " \u0995\u09bc \u09dc"
    assert unicodedata.normalize("NFC", synthesize.speakable(mixed, "bn")) == mixed  # the same letters, spelt whole
    hindi = unicodedata.normalize("NFC", "\u092b\u093c\u0930\u0935\u0930\u0940")
    assert synthesize.speakable(hindi, "hi") == hindi
    if shutil.which("espeak-ng"):
        def phonemes(voice, text):
            return subprocess.run(["espeak-ng", "-v", voice, "-q", "-x", text], capture_output=True, text=True,
                                  check=True).stdout.strip()

        assert phonemes("bn", synthesize.speakable(word, "bn")).endswith("a")  # the final -য়া is spoken
        for voice in ("as", "bpy"):  # neither spells letter names out ("akar" is the name of the vowel sign aa)
            assert "akar" not in phonemes(voice, synthesize.speakable(word, voice)), voice


def test_run_stops_at_the_first_failed_stage_naming_it_and_its_log(tmp_path):
    """Fine-tuning from a pretraining run that does not exist fails stage 3; no later stage runs on nothing."""
    args = ["bash", "run.sh", "--quick", "true", "--stage", "3", "--pretrain", "true", "--data",
            str(tmp_path / "data"), "--exp", str(tmp_path / "exp")]
    result = subprocess.run(args, cwd=RECIPE, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "stage 3 (CTC training on hi,ta (init: pretrained encoder)) failed" in result.stderr, result.stderr
    assert f"its log: {tmp_path / 'exp' / 'log' / 'ft.log'}" in result.stderr
    assert "=== stage 5" not in result.stdout and not (tmp_path / "exp" / "done" / "3").exists()
    assert result.stderr.count("failed (exit code") == 1  # reported once, not by every subshell


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None,
                    reason="espeak-ng and sox are not installed (tools/install_system_deps.sh)")
def test_demo_recipe_quick(tmp_path):
    pytest.importorskip("babel", reason="babel (the recipe's text source) is not installed")
    data, exp = tmp_path / "data", tmp_path / "exp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = ["bash", "run.sh", "--quick", "true", "--data", str(data), "--exp", str(exp), "--head-variants", "global"]
    first = subprocess.run(args, cwd=RECIPE, capture_output=True, text=True, timeout=900, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # the default: no pretraining (stage 2 is not run), ft from scratch, the analysis without a codebook
    assert sorted(p.name for p in (exp / "done").iterdir()) == ["0", "1", "3", "4", "5", "6", "7", "8", "9"]
    assert json.loads((exp / "ft" / "config.json").read_text())["init"] is None
    assert not (exp / "pretrain").exists()
    assert not (data / "train_bpy").exists()  # an unlabelled language's audio is made only for pretraining
    assert "codebook analysis skipped" in (exp / "log" / "analysis.log").read_text()
    train_words = {lang: {w for line in (data / f"train_{lang}" / "text").read_text("utf-8").splitlines()
                          for w in line.split()[1:]} for lang in ("hi", "ta")}
    first_lexicons = {lang: {line.split()[0] for line in path.read_text("utf-8").splitlines()}
                      for lang in ("hi", "ta") if (path := exp / "lm" / lang / "lexicon.txt").is_file()}
    second = subprocess.run(args + ["--stage", "1"], cwd=RECIPE, capture_output=True, text=True, timeout=300,
                            env=env)
    assert second.returncode == 0 and second.stdout.count("already done") == 8, second.stdout[-2000:]
    # the ablation on the same run: pretraining, a pretrained start, and the models decoded and analysed again;
    # the LMs again from the domain's text
    for done in ("4", "5", "6", "8", "9"):
        (exp / "done" / done).unlink()
    shutil.rmtree(exp / "lm")
    third = subprocess.run(args + ["--ablation", "true", "--stage", "2", "--lm-text", "domain"], cwd=RECIPE,
                           capture_output=True, text=True, timeout=900, env=env)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert "=== stage 3" in third.stdout and "already done" in third.stdout.split("=== stage 3")[1].split("===")[0]
    # the ablation's pretrained start and the head variant (one local head made global): as many updates as ft
    for name in ("ft_global", "ft_pretrained"):
        assert (exp / name / "checkpoints" / "LAST").read_text() == (exp / "ft" / "checkpoints" / "LAST").read_text()
    attention = json.loads((exp / "ft_global" / "best" / "config.json").read_text())["config"]["attention"]
    assert attention["global_tokens"]["heads"] == 1 and attention["local"]["heads"] == 3
    for lang in ("hi", "ta", "bpy"):  # bpy: a voice whose text comes from another locale (Bengali script)
        assert len((data / f"train_{lang}" / "wav.scp").read_text().splitlines()) == 8
    for lang in ("hi", "ta"):
        for split in ("dev", "test"):
            assert len((data / f"{split}_{lang}" / "text").read_text(encoding="utf-8").splitlines()) == 4
        assert (exp / "decode" / "ft" / "greedy" / f"test_{lang}" / "wer").read_text().startswith("%WER")
        if list(Path(f"/usr/share/locale/{lang}/LC_MESSAGES").glob("glib20.mo")):  # the out-of-domain sentences
            ood = (data / f"test_ood_{lang}" / "text").read_text(encoding="utf-8").splitlines()
            assert len(ood) == 4 and all("-test_ood-" in line for line in ood)
            assert (exp / "decode" / "ft" / "greedy" / f"test_ood_{lang}" / "wer").read_text().startswith("%WER")
        if KENLM.is_file():
            assert (exp / "decode" / "ft" / "lm" / f"test_{lang}" / "wer").read_text().startswith("%WER")
            # --lm-text domain (the third run): the lexicon holds every test word (the CLDR names); the default
            # lexicon of the first run (--lm-text train) held the training transcripts' words alone
            lexicon = {line.split()[0] for line in (exp / "lm" / lang / "lexicon.txt").read_text("utf-8").splitlines()}
            test_words = {w for line in (data / f"test_{lang}" / "text").read_text("utf-8").splitlines()
                          for w in line.split()[1:]}
            assert test_words <= lexicon and len(lexicon) > 3 * len(train_words[lang])
            assert first_lexicons[lang] == train_words[lang]
    assert len((data / "test_long_hi" / "segments").read_text().splitlines()) == 4
    assert all(line.endswith("|") for line in (data / "test_pipe_hi" / "wav.scp").read_text().splitlines())
    for fmt in ("srt", "ctm", "json"):
        assert (exp / "longform" / "one_pass" / f"long_hi.{fmt}").is_file()
    results = (exp / "RESULTS.md").read_text(encoding="utf-8")
    assert "| test_hi |" in results and "| test_pipe_hi |" in results and "## Time per stage" in results
    assert "ft with one head global, greedy" in results and "trained from scratch, greedy" in results
    assert "pretrained + fine-tuned (as many updates), greedy" in results
    # every dev utterance was usable, so "best" was chosen by validation (a CLDR change once left none)
    assert "16 training and 8 validation utterances; 0 rejected" in (exp / "ft" / "train.log").read_text("utf-8")
    assert (exp / "ft" / "checkpoints" / "BEST").read_text().split()[1:] != []  # "<dir> <wer>"
    fingerprint = hashlib.sha256((data / "test_hi" / "text").read_bytes()).hexdigest()[:16]
    assert "## Text sets" in results and f"| test_hi | 4 | {fingerprint} |" in results
    for name in ("attention_pretrain/attention.json", "attention_ft/w95.png", "layers_ft/layers.json",
                 "layers_pretrain/layer_probes.png", "codebook/codebook_dendrogram.png"):
        assert (exp / "analysis" / name).is_file(), name
    assert "## Analysis" in results and "| ft_local_distilled | 0.5 |" in results and "Codebook use" in results
    assert "train update 6" in (exp / "pretrain" / "train.log").read_text()
    bad = subprocess.run(["bash", "run.sh", "--quick", "true", "--bogus", "1"], cwd=RECIPE, capture_output=True,
                         text=True, timeout=60, env=env)
    assert bad.returncode != 0 and "unknown option --bogus" in bad.stderr


def test_out_of_domain_sentences_come_from_message_catalogues(synthesize, tmp_path, capsys):
    """Translated messages become test sentences: markup, Latin letters, digits and name catalogues are left
    out, punctuation goes, NFC; a language without catalogues gets no set and a warning, not a failure."""
    pytest.importorskip("babel", reason="babel (writes the test catalogues) is not installed")
    from babel.messages.catalog import Catalog
    from babel.messages.mofile import write_mo

    messages = {"a": "फ़ाइल खोलें और सहेजें।", "b": "%s फ़ाइलें", "c": "<b>मोटा</b> पाठ यहाँ", "d": "दो शब्द",
                "e": "नया फ़ोल्डर बनाएँ, फिर आगे बढ़ें", "f": "GNOME सत्र शुरू करें", "g": "पृष्ठ 3 देखें अभी"}
    folder = tmp_path / "hi" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    for name, entries in (("app.mo", messages), ("iso_639-3.mo", {"x": "हिन्दी भाषा परिवार नाम"})):
        catalog = Catalog(locale="hi")
        for source, text in entries.items():
            catalog.add(source, text)
        with open(folder / name, "wb") as handle:
            write_mo(handle, catalog)
    found = synthesize.message_sentences("hi", tmp_path)
    assert found == sorted({"फ़ाइल खोलें और सहेजें", "नया फ़ोल्डर बनाएँ फिर आगे बढ़ें"})
    import unicodedata
    assert all(unicodedata.is_normalized("NFC", s) for s in found)
    # Tamil messages spelt with Hindi training characters: there are none, so no set (and a warning)
    assert synthesize.ood_sentences("ta", "test_ood", 5, 1, ["फ़ाइल खोलें और सहेजें"]) == []
    assert "no usable translated messages" in capsys.readouterr().err
