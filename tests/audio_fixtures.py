"""Real audio files and Kaldi data dirs written by the tests (soundfile), small enough for CI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def tone_wave(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A voiced-speech-like signal: a few harmonics with a drifting pitch, an envelope and noise."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    pitch = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    wave = sum(rng.uniform(0.1, 0.5) / k * np.sin(k * phase) for k in range(1, 6))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * np.minimum(t / max(seconds, 1e-3), 1)))
    return (0.3 * wave * envelope + 0.01 * rng.standard_normal(n)).astype(np.float32)


def make_data_dir(root: Path, name: str, count: int, language: str = "xx", seconds=(0.6, 1.4), seed: int = 0,
                  sample_rate: int = 16000, texts: list[str] | None = None) -> Path:
    """Write ``count`` wav files and a valid Kaldi data dir ``root/name``."""
    rng = np.random.default_rng(seed)
    data_dir, wav_dir = root / name, root / "wav" / name
    data_dir.mkdir(parents=True, exist_ok=True)
    wav_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        utt = f"{language}-spk{i % 3}-{i:04d}"
        path = wav_dir / f"{utt}.wav"
        sf.write(path, tone_wave(rng.uniform(*seconds), sample_rate, rng), sample_rate, subtype="PCM_16")
        rows.append((utt, path, f"{language}-spk{i % 3}"))
    rows.sort()
    (data_dir / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p, _ in rows))
    (data_dir / "utt2spk").write_text("".join(f"{u} {s}\n" for u, _, s in rows))
    (data_dir / "utt2lang").write_text("".join(f"{u} {language}\n" for u, _, _ in rows))
    if texts is not None:
        (data_dir / "text").write_text("".join(f"{u} {texts[i % len(texts)]}\n" for i, (u, _, _) in enumerate(rows)),
                                       encoding="utf-8")
    speakers: dict[str, list[str]] = {}
    for u, _, s in rows:
        speakers.setdefault(s, []).append(u)
    (data_dir / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(speakers.items())))
    return data_dir
