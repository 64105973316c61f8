#!/usr/bin/env python
"""Synthesise Indian-language speech with espeak-ng into Kaldi data dirs (one per language and split).

Run: python local/synthesize.py --out data --langs hi,bn,ta --split train --utts 200 --seed 1 --nj 2

Text is built from the Unicode CLDR data that ships with the `babel` package (territory, language, month
and weekday names in each language's own script), so a fresh machine needs nothing else. Speakers are
espeak-ng voice variants with their own rate, pitch and amplitude; held-out splits use other variants and
other sentences than training (the split name seeds both choices).
"""
from __future__ import annotations

import argparse
import hashlib
import random
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
FAMILY = {"bpy": "indo-aryan", "hi": "indo-aryan", "bn": "indo-aryan", "mr": "indo-aryan", "gu": "indo-aryan", "pa": "indo-aryan",
          "or": "indo-aryan", "as": "indo-aryan", "ne": "indo-aryan", "ur": "indo-aryan", "sd": "indo-aryan",
          "si": "indo-aryan", "kok": "indo-aryan", "ta": "dravidian", "te": "dravidian", "kn": "dravidian",
          "ml": "dravidian"}


# espeak-ng voices whose language CLDR lacks read text of a language in the same script
TEXT_FROM = {"bpy": "bn"}  # Bishnupriya Manipuri is written in the Bengali script


def vocabulary(lang: str) -> list[str]:
    """Words in the language's own script from CLDR (no Latin letters or digits), NFC-normalised."""
    from babel import Locale

    locale = Locale.parse(TEXT_FROM.get(lang, lang))
    names = list(locale.territories.values()) + list(locale.languages.values())
    names += list(locale.months["format"]["wide"].values()) + list(locale.days["format"]["wide"].values())
    words = set()
    for name in names:
        for word in unicodedata.normalize("NFC", name).replace("(", " ").replace(")", " ").split():
            word = word.strip(".,;:!?'\"-–—/")
            if word and not any(c.isascii() or c.isdigit() for c in word):
                words.add(word)
    return sorted(words)


def sentences(lang: str, split: str, count: int, seed: int, min_words: int = 3, max_words: int = 7,
              exclude: set[str] | None = None) -> list[str]:
    """Deterministic word sequences, a seed per split; none of them is in ``exclude`` (the training
    sentences, when a held-out split is made) or repeated."""
    words = vocabulary(lang)
    rng = random.Random(f"{seed}-{lang}-{split}")
    seen = set(exclude or ())
    result = []
    while len(result) < count:
        sentence = " ".join(rng.choices(words, k=rng.randint(min_words, max_words)))
        if sentence not in seen:
            seen.add(sentence)
            result.append(sentence)
    return result


def speak(text: str, voice: str, rate: int, pitch: int, amplitude: int, out: Path, sample_rate: int,
          snr_db: float | None = None, seed: int = 0) -> float:
    """Synthesise ``text`` into ``out`` (16-bit PCM at ``sample_rate``); with ``snr_db``, add white noise at
    that signal-to-noise ratio. Returns the duration in seconds."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-a", str(amplitude),
                        "-w", tmp.name, text], check=True, capture_output=True)
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
    parser.add_argument("--words", type=int, nargs=2, default=(3, 7), metavar=("MIN", "MAX"),
                        help="words per sentence")
    parser.add_argument("--noise-snr", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="add white noise at a random SNR in [LOW, HIGH] dB to each utterance")
    args = parser.parse_args()

    out = Path(args.out)
    variants = TRAIN_VARIANTS if args.split == "train" else HELDOUT_VARIANTS
    for lang in args.langs.split(","):
        data_dir = out / f"{args.split}_{lang}"
        wav_dir = out / "wav" / f"{args.split}_{lang}"
        wav_dir.mkdir(parents=True, exist_ok=True)
        jobs = []
        train_text = out / f"train_{lang}" / "text"
        exclude = set()
        if args.split != "train" and train_text.is_file():  # held-out sentences never repeat a training one
            exclude = {line.split(" ", 1)[1] for line in train_text.read_text(encoding="utf-8").splitlines()}
        for i, text in enumerate(sentences(lang, args.split, args.utts, args.seed, *args.words, exclude=exclude)):
            rng = random.Random(hashlib.sha1(f"{args.seed}-{lang}-{args.split}-{i}".encode()).hexdigest())
            variant = rng.choice(variants)
            rate, pitch, amp = rng.randint(130, 185), rng.randint(30, 70), rng.randint(80, 140)
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
        print(f"{data_dir}: {len(rows)} utterances, {sum(durations) / 60:.1f} min, {len(speakers)} speakers",
              file=sys.stderr)


if __name__ == "__main__":
    main()
