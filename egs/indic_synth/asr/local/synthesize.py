#!/usr/bin/env python
"""Synthesise Indian-language speech with espeak-ng into Kaldi data dirs (one per language and split).

Run: python local/synthesize.py --out data --langs hi,bn,ta --split train --utts 200 --seed 1 --nj 2

Text is built from the Unicode CLDR data that ships with the `babel` package (territory, language, month
and weekday names in each language's own script), so a fresh machine needs nothing else. Speakers are
espeak-ng voice variants with their own rate, pitch and amplitude; held-out splits use other variants and
other sentences than training (the split name seeds both choices), drawn only from words whose characters the
training text has, so every held-out character is in the fine-tuned model's vocabulary.

``--text-source messages`` makes an out-of-domain split instead: real sentences, the translated user-interface
messages of Debian packages (gettext catalogues under /usr/share/locale/<lang>/LC_MESSAGES, which
tools/install_system_deps.sh installs), spoken by named espeak-ng voices that no other split uses, at pitches
outside the training range. Catalogues of names (iso-codes) are left out, as are messages with Latin letters,
digits or markup, and messages with characters the training text lacks. ``--voices heldout|ood`` chooses a
held-out split's speakers apart from its text, so that the two shifts can be measured one at a time.
"""
from __future__ import annotations

import argparse
import hashlib
import random
import re
import subprocess
import sys
import tempfile
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

# espeak-ng voice variants: train speakers and held-out speakers are disjoint
TRAIN_VARIANTS = ["m1", "m2", "m3", "m4", "f1", "f2", "f3"]
HELDOUT_VARIANTS = ["m5", "m6", "f4", "f5"]
# ``--train-voices many``: every other variant espeak-ng 1.51 ships (voices/!v), less the held-out ones, the
# out-of-domain voices (OOD_VOICES below) and the variants built on them (AnxiousAndy, RicishayMax*), so no
# test voice is heard in training. Named in full, not read from the installed espeak-ng, so that the corpus
# does not change with its version; a variant the installed espeak-ng lacks is an error (see check_variants).
MANY_TRAIN_VARIANTS = TRAIN_VARIANTS + [
    "m7", "m8", "adam", "Alex", "Andrea", "anika", "anikaRobot", "announcer", "antonio", "aunty", "belinda",
    "benjamin", "boris", "caleb", "croak", "david", "Demonic", "Diogo", "ed", "edward", "edward2", "fast",
    "Gene", "Gene2", "grandma", "grandpa", "gustave", "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4",
    "Jacky", "john", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "linda", "marcelo",
    "Marco", "Mario", "Michael", "michel", "miguel", "Mike", "Nguyen", "norbert", "pablo", "paul", "pedro",
    "quincy", "rob", "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6",
    "robosoft7", "robosoft8", "sandro", "shelby", "steph", "steph2", "steph3", "Storm", "travis", "Tweaky",
    "UniRobot", "victor", "whisper", "whisperf", "zac"]
OTHER_TRAIN_VARIANTS = MANY_TRAIN_VARIANTS[len(TRAIN_VARIANTS):]
FAMILY = {
    "bpy": "indo-aryan",
    "hi": "indo-aryan",
    "bn": "indo-aryan",
    "mr": "indo-aryan",
    "gu": "indo-aryan",
    "pa": "indo-aryan",
    "or": "indo-aryan",
    "as": "indo-aryan",
    "ne": "indo-aryan",
    "ur": "indo-aryan",
    "sd": "indo-aryan",
    "si": "indo-aryan",
    "kok": "indo-aryan",
    "ta": "dravidian",
    "te": "dravidian",
    "kn": "dravidian",
    "ml": "dravidian",
}


# espeak-ng voices whose language CLDR lacks read text of a language in the same script
TEXT_FROM = {"bpy": "bn"}  # Bishnupriya Manipuri is written in the Bengali script


def cldr_names(lang: str) -> list[str]:
    """CLDR's territory, language, month and weekday names in the language's own script, NFC, as the corpus
    reads them: brackets and punctuation around words removed, words with Latin letters or digits left out
    (a name left with no word is dropped). Sorted, unique."""
    from babel import Locale

    locale = Locale.parse(TEXT_FROM.get(lang, lang))
    names = list(locale.territories.values()) + list(locale.languages.values())
    names += list(locale.months["format"]["wide"].values()) + list(locale.days["format"]["wide"].values())
    cleaned = set()
    for name in names:
        words = []
        for word in unicodedata.normalize("NFC", name).replace("(", " ").replace(")", " ").split():
            word = word.strip(".,;:!?'\"-–—/")
            if word and not any(c.isascii() or c.isdigit() for c in word):
                words.append(word)
        if words:
            cleaned.add(" ".join(words))
    return sorted(cleaned)


def vocabulary(lang: str) -> list[str]:
    """The words of :func:`cldr_names`: what every sentence of the corpus is drawn from."""
    return sorted({word for name in cldr_names(lang) for word in name.split()})


def sentences(
    lang: str,
    split: str,
    count: int,
    seed: int,
    min_words: int = 3,
    max_words: int = 7,
    exclude: set[str] | None = None,
    allowed: set[str] | None = None,
) -> list[str]:
    """Deterministic word sequences, a seed per split; none of them is in ``exclude`` (the training
    sentences, when a held-out split is made) or repeated.

    With ``allowed`` (a set of words), a drawn word outside it is replaced by one drawn from it with a second
    random stream, so the sentences whose words are all allowed are exactly those drawn without the
    restriction: a restriction that removes nothing changes nothing.
    """
    words = vocabulary(lang)
    rng = random.Random(f"{seed}-{lang}-{split}")
    replacement_rng = random.Random(f"{seed}-{lang}-{split}-replacement")
    substitutes = sorted(allowed) if allowed is not None else []
    if allowed is not None and not substitutes:
        raise SystemExit(f"{lang}: no word of the language is spelt with the training text's characters")
    seen = set(exclude or ())
    result, attempts = [], 0
    while len(result) < count:
        attempts += 1
        if attempts > 1000 * count:  # a tiny word list whose every sentence is taken
            raise SystemExit(f"{lang}: cannot draw {count} distinct {split} sentences from {len(substitutes)} words")
        drawn = rng.choices(words, k=rng.randint(min_words, max_words))
        if allowed is not None:
            drawn = [w if w in allowed else replacement_rng.choice(substitutes) for w in drawn]
        sentence = " ".join(drawn)
        if sentence not in seen:
            seen.add(sentence)
            result.append(sentence)
    return result


OOD_VOICES = ["Andy", "annie", "Denis", "Lee", "max", "Alicia"]  # named variants: other formants than m1..f5
NAME_CATALOGUES = ("iso_639", "iso_3166", "iso_4217", "iso_15924")  # lists of names, like the training text


def message_sentences(
    lang: str, locale_dir: Path = Path("/usr/share/locale"), min_words: int = 3, max_words: int = 10
) -> list[str]:
    """Sentences from the language's gettext catalogues: translated messages without Latin letters, digits,
    placeholders or markup, punctuation removed, NFC, ``min_words``..``max_words`` words; sorted, unique."""
    import gettext

    found = set()
    for path in sorted((locale_dir / lang / "LC_MESSAGES").glob("*.mo")):
        if path.name.startswith(NAME_CATALOGUES):
            continue
        try:
            with open(path, "rb") as handle:
                catalogue = gettext.GNUTranslations(handle)
        except (OSError, UnicodeDecodeError, gettext.error) as error:  # a broken catalogue is skipped, not fatal
            print(f"{path}: skipped ({error})", file=sys.stderr)
            continue
        for source, message in catalogue._catalog.items():
            if not source or not isinstance(message, str):
                continue
            if re.search(r"[A-Za-z0-9%_&<>{}\\/=@$#|\[\]()\"'`*+~^]", message):
                continue
            text = re.sub(r"[.,:;!?\u0964\u0965\u2026\-\u2013\u2014]+", " ", unicodedata.normalize("NFC", message))
            words = text.split()
            if min_words <= len(words) <= max_words:
                found.add(" ".join(words))
    return sorted(found)


def characters(text: str) -> set[str]:
    """The labels a character-level CTC model trained on ``text`` has (the toolkit's own normalisation)."""
    from seqattn.data.text import normalize_text

    return set(normalize_text(text).replace(" ", ""))


def covered_words(words: list[str], training_sentences: list[str]) -> set[str]:
    """The words spelt only with characters that occur in ``training_sentences``.

    Held-out sentences are built from these, so every dev/test character is in the fine-tuned model's
    vocabulary whatever the CLDR release and however few training sentences there are (the quick run has
    eight per language).
    """
    known = characters(" ".join(training_sentences))
    return {word for word in words if characters(word) <= known}


def split_sentences(
    lang: str,
    split: str,
    count: int,
    seed: int,
    min_words: int,
    max_words: int,
    training_sentences: list[str] | None = None,
) -> list[str]:
    """The sentences of one split: training draws from every CLDR word; a held-out split (given the
    training sentences) uses only covered words and never repeats a training sentence."""
    if split == "train" or training_sentences is None:
        return sentences(lang, split, count, seed, min_words, max_words)
    allowed = covered_words(vocabulary(lang), training_sentences)
    return sentences(lang, split, count, seed, min_words, max_words, exclude=set(training_sentences), allowed=allowed)


def ood_sentences(lang: str, split: str, count: int, seed: int, training_sentences: list[str]) -> list[str]:
    """``count`` message sentences spelt with the training text's characters (deterministic per seed and split)."""
    known = characters(" ".join(training_sentences))
    candidates = [text for text in message_sentences(TEXT_FROM.get(lang, lang)) if characters(text) <= known]
    if not candidates:  # an optional set: the rest of the recipe runs without it
        print(
            f"warning: {lang}: no usable translated messages under /usr/share/locale/{lang}/LC_MESSAGES, no "
            f"{split} set (install libglib2.0-data, shared-mime-info and xdg-user-dirs: "
            "tools/install_system_deps.sh)",
            file=sys.stderr,
        )
        return []
    rng = random.Random(f"{seed}-{lang}-{split}-messages")
    return rng.sample(candidates, min(count, len(candidates)))


def check_variants(variants: list[str]) -> None:
    """Stop with the missing names when the installed espeak-ng lacks a voice variant the split needs (it would
    otherwise fall back to its default voice without a word, and the corpus would have fewer voices than it says)."""
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True).stdout
    installed = {line.split()[4].split("/")[-1].lower() for line in listing.splitlines()[1:] if len(line.split()) > 4}
    missing = [v for v in variants if v.lower() not in installed]
    if missing:
        raise SystemExit(f"espeak-ng lacks the voice variant(s) {', '.join(missing)} (espeak-ng --voices=variant)")


def _nukta_letters() -> dict[str, str]:
    """letter + nukta -> the precomposed letter, for every Indic letter whose canonical decomposition is one.
    NFC keeps most of them decomposed (composition exclusions: Devanagari U+0958-095F, Bengali U+09DC/09DD/09DF,
    Gurmukhi and Oriya ones)."""
    table = {}
    for code in range(0x0900, 0x0D80):
        parts = unicodedata.decomposition(chr(code)).split()
        if len(parts) == 2 and unicodedata.name(chr(int(parts[1], 16)), "").endswith("NUKTA"):
            table[chr(int(parts[0], 16)) + chr(int(parts[1], 16))] = chr(code)
    return table


NUKTA_LETTERS = _nukta_letters()
NUKTA_PAIR = re.compile("|".join(NUKTA_LETTERS))


# The voices whose espeak-ng 1.51 rules read a nukta letter only precomposed. Its Bengali rules read রাশিয়া
# (NFC: ya + nukta) as "r'aSi", with no sound for -য়া, and the precomposed spelling as "r'aSi,a"; its Assamese
# rules spell the decomposed pair out as letter names. Bishnupriya Manipuri (bpy, Bengali script) is the other
# way round: it spells the precomposed letter out, so its text stays as it is. Hindi, Punjabi, Oriya and Konkani
# read both alike. Measured over each language's CLDR words (espeak-ng -x, both spellings): bn 243 of 879 words
# differ, as 163 of 800, bpy 252 of 879, the others none.
PRECOMPOSED_NUKTA_VOICES = {"bn", "as"}


def speakable(text: str, lang: str) -> str:
    """The spelling of ``text`` that espeak-ng's ``lang`` voice reads as written: with the voices of
    PRECOMPOSED_NUKTA_VOICES every letter + nukta pair precomposed, else ``text`` itself. The transcripts
    stay NFC."""
    if lang not in PRECOMPOSED_NUKTA_VOICES:
        return text
    return NUKTA_PAIR.sub(lambda pair: NUKTA_LETTERS[pair.group()], text)


def speak(
    text: str,
    voice: str,
    rate: int,
    pitch: int,
    amplitude: int,
    out: Path,
    sample_rate: int,
    snr_db: float | None = None,
    seed: int = 0,
) -> float:
    """Synthesise ``text`` into ``out`` (16-bit PCM at ``sample_rate``); with ``snr_db``, add white noise at
    that signal-to-noise ratio. Returns the duration in seconds."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(
            [
                "espeak-ng",
                "-v",
                voice,
                "-s",
                str(rate),
                "-p",
                str(pitch),
                "-a",
                str(amplitude),
                "-w",
                tmp.name,
                speakable(text, voice.split("+")[0]),
            ],
            check=True,
            capture_output=True,
        )
        audio, rate_in = sf.read(tmp.name, dtype="float32")
    wave = torch.from_numpy(np.ascontiguousarray(audio))
    if rate_in != sample_rate:
        wave = AF.resample(wave, rate_in, sample_rate)
    if snr_db is not None and wave.numel():
        noise = torch.randn(wave.numel(), generator=torch.Generator().manual_seed(seed))
        power = wave.pow(2).mean().clamp(min=1e-10)
        wave = wave + noise * (power / 10 ** (snr_db / 10)).sqrt()
        wave = wave / max(1.0, float(wave.abs().max()) / 0.99)  # no clipping in the 16-bit file
    sf.write(out, wave.numpy(), sample_rate, subtype="PCM_16")
    return wave.numel() / sample_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="data root; writes OUT/<split>_<lang>/ and OUT/wav/")
    parser.add_argument("--langs", required=True, help="comma-separated espeak-ng language codes")
    parser.add_argument("--split", default="train")
    parser.add_argument("--utts", type=int, default=100, help="utterances per language")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nj", type=int, default=2)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--words", type=int, nargs=2, default=(3, 7), metavar=("MIN", "MAX"), help="words per sentence")
    parser.add_argument(
        "--noise-snr",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="add white noise at a random SNR in [LOW, HIGH] dB to each utterance",
    )
    parser.add_argument(
        "--text-source",
        choices=["cldr", "messages"],
        default="cldr",
        help="messages: an out-of-domain split of translated Debian messages (see above)",
    )
    parser.add_argument(
        "--train-voices",
        choices=["classic", "many", "mixed"],
        default="classic",
        help="train split's voice variants: classic, the 7 m1-m4/f1-f3; many, every espeak-ng "
        "variant that no held-out or out-of-domain split uses (86); mixed, half of the "
        "utterances from the classic 7 and half from the 79 others",
    )
    parser.add_argument(
        "--voices",
        choices=["auto", "heldout", "ood"],
        default="auto",
        help="speakers of a held-out split: auto, the held-out variants for CLDR text and the "
        "out-of-domain voices (at pitches outside the training range) for messages; heldout "
        "or ood sets them apart from the text, so that a split can change only the text "
        "(--text-source messages --voices heldout) or only the voices (--voices ood)",
    )
    args = parser.parse_args()

    out = Path(args.out)
    ood = args.text_source == "messages"
    if args.split == "train" and (ood or args.voices != "auto"):
        raise SystemExit(
            "--text-source messages and --voices make held-out test sets only; give --split, e.g. test_ood"
        )
    ood_voices = args.voices == "ood" or (args.voices == "auto" and ood)
    train_variants = TRAIN_VARIANTS if args.train_voices == "classic" else MANY_TRAIN_VARIANTS
    variants = OOD_VOICES if ood_voices else train_variants if args.split == "train" else HELDOUT_VARIANTS
    check_variants(variants)
    for lang in args.langs.split(","):
        data_dir = out / f"{args.split}_{lang}"
        wav_dir = out / "wav" / f"{args.split}_{lang}"
        wav_dir.mkdir(parents=True, exist_ok=True)
        jobs = []
        train_text = out / f"train_{lang}" / "text"
        training = None
        if args.split != "train":
            if not train_text.is_file():
                raise SystemExit(
                    f"{train_text} is missing: synthesise the train split first (held-out "
                    "sentences are drawn from the characters it covers)"
                )
            training = [line.split(" ", 1)[1] for line in train_text.read_text(encoding="utf-8").splitlines()]
        if ood:
            texts = ood_sentences(lang, args.split, args.utts, args.seed, training)
            if not texts:
                continue
        else:
            texts = split_sentences(lang, args.split, args.utts, args.seed, *args.words, training)
        for i, text in enumerate(texts):
            rng = random.Random(hashlib.sha1(f"{args.seed}-{lang}-{args.split}-{i}".encode()).hexdigest())
            if args.split == "train" and args.train_voices == "mixed":  # half classic, half the other variants
                variant = rng.choice(TRAIN_VARIANTS if rng.random() < 0.5 else OTHER_TRAIN_VARIANTS)
            else:
                variant = rng.choice(variants)
            rate, pitch, amp = rng.randint(130, 185), rng.randint(30, 70), rng.randint(80, 140)
            if ood_voices:  # pitch outside the training range [30, 70]
                pitch = rng.choice([rng.randint(12, 25), rng.randint(75, 90)])
            speaker = f"{lang}-{variant}"
            utt = f"{speaker}-{args.split}-{i:05d}"
            snr = rng.uniform(*args.noise_snr) if args.noise_snr else None
            jobs.append((utt, speaker, text, f"{lang}+{variant}", rate, pitch, amp, wav_dir / f"{utt}.wav", snr, i))
        with ThreadPoolExecutor(args.nj) as pool:
            durations = list(pool.map(lambda j: speak(*j[2:8], args.sample_rate, j[8], j[9]), jobs))
        data_dir.mkdir(parents=True, exist_ok=True)
        rows = sorted(jobs, key=lambda job: job[0])  # Kaldi files are sorted by utterance id
        (data_dir / "wav.scp").write_text("".join(f"{job[0]} {job[7].resolve()}\n" for job in rows))
        (data_dir / "text").write_text("".join(f"{u} {t}\n" for u, _, t, *_ in rows), encoding="utf-8")
        (data_dir / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s, *_ in rows))
        (data_dir / "utt2lang").write_text("".join(f"{u} {lang}\n" for u, *_ in rows))
        speakers: dict[str, list[str]] = {}
        for u, s, *_ in rows:
            speakers.setdefault(s, []).append(u)
        (data_dir / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(speakers.items())))
        print(
            f"{data_dir}: {len(rows)} utterances, {sum(durations) / 60:.1f} min, {len(speakers)} speakers",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
