#!/usr/bin/env python
"""Long-form and piped test sets from a held-out Kaldi data dir.

Run: python local/make_longform.py --src data/test_hi data/dev_hi --long data/test_long_hi \
       --pipe data/test_pipe_hi --wav data/wav/long_hi.wav --utts 80

--long: the first --utts utterances of the --src dirs (in the order given, each sorted) joined into one
        recording (with pauses of 0.3-0.8 s between them) and a
        data dir that points at it through a ``segments`` file (one line per original utterance, with its
        start and end time in the recording), so the recording is several minutes long and every segment
        has its reference transcript.
--pipe: the same utterances as a data dir whose ``wav.scp`` entries are sox pipe commands
        (``sox FILE -t wav -r 16000 - |``), the way Kaldi recipes convert audio on the fly.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000


def read_table(path: Path) -> dict[str, str]:
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        table[key] = value
    return table


def write_table(path: Path, rows: dict[str, str]) -> None:
    path.write_text("".join(f"{k} {v}\n" for k, v in sorted(rows.items())), encoding="utf-8")


def write_speakers(data_dir: Path, utt2spk: dict[str, str]) -> None:
    write_table(data_dir / "utt2spk", utt2spk)
    speakers: dict[str, list[str]] = {}
    for utt, spk in sorted(utt2spk.items()):
        speakers.setdefault(spk, []).append(utt)
    write_table(data_dir / "spk2utt", {s: " ".join(us) for s, us in speakers.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, nargs="+", help="held-out data dirs with plain-file wav.scp")
    parser.add_argument("--long", required=True, help="data dir to write: one recording + segments")
    parser.add_argument("--pipe", required=True, help="data dir to write: sox-piped wav.scp")
    parser.add_argument("--wav", required=True, help="where the long recording goes")
    parser.add_argument("--utts", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    wav_scp, text, utt2spk, utt2lang, utts = {}, {}, {}, {}, []
    for src in map(Path, args.src):
        table = read_table(src / "wav.scp")
        utts += sorted(table)
        wav_scp.update(table)
        text.update(read_table(src / "text"))
        utt2spk.update(read_table(src / "utt2spk"))
        utt2lang.update(read_table(src / "utt2lang"))
    utts = utts[: args.utts]
    rng = random.Random(args.seed)

    recording = Path(args.wav).resolve()
    recording.parent.mkdir(parents=True, exist_ok=True)
    rec_id = f"{Path(args.src[0]).name}-long"
    segments, pieces, position = {}, [], 0.0
    for utt in utts:
        audio, rate = sf.read(wav_scp[utt], dtype="float32")
        if rate != SAMPLE_RATE:
            raise SystemExit(f"{wav_scp[utt]}: expected {SAMPLE_RATE} Hz, got {rate}")
        pause = np.zeros(int(rng.uniform(0.3, 0.8) * SAMPLE_RATE), dtype=np.float32)
        start = position + len(pause) / SAMPLE_RATE
        pieces += [pause, audio]
        position = start + len(audio) / SAMPLE_RATE
        segments[utt] = f"{rec_id} {start:.3f} {position:.3f}"
    pieces.append(np.zeros(SAMPLE_RATE // 2, dtype=np.float32))
    sf.write(recording, np.concatenate(pieces), SAMPLE_RATE, subtype="PCM_16")

    long_dir = Path(args.long)
    long_dir.mkdir(parents=True, exist_ok=True)
    write_table(long_dir / "wav.scp", {rec_id: str(recording)})
    write_table(long_dir / "segments", segments)
    write_table(long_dir / "text", {u: text[u] for u in utts})
    write_table(long_dir / "utt2lang", {u: utt2lang[u] for u in utts})
    write_speakers(long_dir, {u: utt2spk[u] for u in utts})

    pipe_dir = Path(args.pipe)
    pipe_dir.mkdir(parents=True, exist_ok=True)
    write_table(pipe_dir / "wav.scp", {u: f"sox {shlex.quote(wav_scp[u])} -t wav -r {SAMPLE_RATE} - |" for u in utts})
    write_table(pipe_dir / "text", {u: text[u] for u in utts})
    write_table(pipe_dir / "utt2lang", {u: utt2lang[u] for u in utts})
    write_speakers(pipe_dir, {u: utt2spk[u] for u in utts})
    print(f"{recording}: {position / 60:.1f} min, {len(utts)} segments; {pipe_dir}: piped wav.scp", file=sys.stderr)


if __name__ == "__main__":
    main()
