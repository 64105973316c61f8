"""Audio input: soundfile for decoding, torchaudio for resampling, Kaldi-style pipes for ``cmd |`` sources.

Every failure is an :class:`AudioError` that names the source, so batch jobs can report it and go on.
"""
from __future__ import annotations

import io
import os
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from seqattn.errors import SeqattnError

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384000
# what soundfile raises for a file it cannot decode
DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, ValueError, OSError, TypeError)


class AudioError(SeqattnError):
    """An audio source that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class AudioSource:
    """Where audio comes from: a file path or a Kaldi pipe (a command ending in ``|``), optionally a segment."""

    location: str
    start: float | None = None  # seconds
    end: float | None = None  # seconds (None: to the end)

    @property
    def is_pipe(self) -> bool:
        return self.location.rstrip().endswith("|")

    @property
    def seekable(self) -> bool:
        """True when the audio is a file that can be read piece by piece (streamed); pipes run whole."""
        return not self.is_pipe

    def __str__(self) -> str:
        if self.start is None:
            return self.location
        return f"{self.location} [{self.start:.2f}-{'' if self.end is None else f'{self.end:.2f}'}]"


@dataclass(frozen=True)
class EmbeddedAudio(AudioSource):
    """Audio stored inside something else (a row of an HF dataset): :meth:`open` gives a file-like object
    over its encoded bytes, or the path of the file it refers to. It is read whole, never streamed."""

    @property
    def is_pipe(self) -> bool:
        return False

    @property
    def seekable(self) -> bool:
        return False

    def open(self):
        raise NotImplementedError


def run_pipe(command: str, timeout: float) -> bytes:
    """Run a Kaldi ``wav.scp`` pipe command with the shell, as Kaldi does, and return its stdout."""
    command = command.rstrip()[:-1]
    try:
        proc = subprocess.run(command, shell=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AudioError(f"pipe command timed out after {timeout:.0f} s: {command}") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(
            f"pipe command failed (exit {proc.returncode}): {command}" + (f": {detail[-1]}" if detail else "")
        )
    if not proc.stdout:
        raise AudioError(f"pipe command produced no audio: {command}")
    return proc.stdout


def check_wav_length(source: AudioSource) -> None:
    """libsndfile quietly shortens a WAV whose data chunk is cut off; compare the chunk's declared size with
    the bytes present and call a cut file what it is (a streaming placeholder size of 0 or 0xFFFFFFFF is fine)."""
    with open(source.location, "rb") as handle:
        head = handle.read(4096)
        size = os.fstat(handle.fileno()).st_size
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    position = 12
    while position + 8 <= len(head):
        chunk, length = head[position : position + 4], int.from_bytes(head[position + 4 : position + 8], "little")
        if chunk == b"data":
            available = size - (position + 8)
            if 0 < length < 0xFFFFFFFF and available < length:
                raise AudioError(
                    f"{source}: truncated: its data chunk declares {length} bytes, the file holds {available}"
                )
            return
        position += 8 + length + (length & 1)


def check_file(source: AudioSource) -> None:
    """A clear error for a file source that is a directory, missing, or a broken symlink."""
    if os.path.isdir(source.location):
        raise AudioError(f"{source}: is a directory, not an audio file")
    if not os.path.exists(source.location):
        raise AudioError(f"{source}: no such file" + (" (broken symlink)" if os.path.islink(source.location) else ""))


def segment_frames(source: AudioSource, f: sf.SoundFile) -> tuple[int, int]:
    """[start, stop) in the open file's native frames: its segment, or all of it; checks the sample rate."""
    rate = f.samplerate
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{source}: sample rate {rate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]")
    start = 0 if source.start is None else int(round(source.start * rate))
    stop = f.frames if source.end is None else min(f.frames, int(round(source.end * rate)))
    if source.start is not None and (start < 0 or start >= max(f.frames, 1) or stop <= start):
        raise AudioError(
            f"{source}: segment [{source.start}, {source.end}] s lies outside the recording ({f.frames / rate:.2f} s)"
        )
    return start, stop


def _decode(source: AudioSource, pipe_timeout: float, allow_pipes: bool) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 and the native sample rate, segment applied."""
    try:
        if isinstance(source, EmbeddedAudio):
            handle = source.open()
        elif source.is_pipe:
            if not allow_pipes:
                raise AudioError(f"pipe sources are disabled (--no-pipes): {source.location}")
            handle = io.BytesIO(run_pipe(source.location, pipe_timeout))
        else:
            handle = source.location
            check_file(source)
        with sf.SoundFile(handle) as f:
            rate = f.samplerate
            start, stop = segment_frames(source, f)
            f.seek(start)
            data = f.read(stop - start, dtype="float32", always_2d=True)
            if data.shape[0] < stop - start:
                raise AudioError(
                    f"{source}: truncated: the header promises {stop - start} frames, the file holds {data.shape[0]}"
                )
        if handle == source.location:  # a plain file (embedded bytes and pipes are checked by decoding)
            check_wav_length(source)
    except AudioError:
        raise
    except FileNotFoundError:
        raise AudioError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise AudioError(f"{source}: is a directory, not an audio file") from None
    except DECODE_ERRORS as error:
        raise AudioError(f"{source}: cannot decode audio ({error})") from None
    return data, rate


def load_audio(
    source: AudioSource | str,
    sample_rate: int = 16000,
    *,
    channel: int | None = None,
    pipe_timeout: float = 120.0,
    allow_pipes: bool = True,
) -> torch.Tensor:
    """Decode to a mono float32 tensor (S,) at ``sample_rate``.

    Multi-channel audio is averaged, or ``channel`` picks one. Non-finite samples are an error. An empty
    recording returns an empty tensor (the caller decides whether that is an error).
    """
    if isinstance(source, str):
        source = AudioSource(source)
    data, rate = _decode(source, pipe_timeout, allow_pipes)
    if channel is not None:
        if not 0 <= channel < data.shape[1]:
            raise AudioError(f"{source}: channel {channel} requested but the audio has {data.shape[1]} channels")
        mono = data[:, channel]
    else:
        mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioError(f"{source}: contains NaN or infinite samples")
    wave = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    if rate != sample_rate and wave.numel() > 0:
        import torchaudio.functional as AF

        wave = AF.resample(wave, rate, sample_rate)
    return wave


def audio_duration(source: AudioSource | str, *, pipe_timeout: float = 120.0, allow_pipes: bool = True) -> float:
    """Duration in seconds, from the header when possible (pipes must be run)."""
    if isinstance(source, str):
        source = AudioSource(source)
    if source.is_pipe:
        data, rate = _decode(source, pipe_timeout, allow_pipes)
        return data.shape[0] / rate
    if source.start is not None and source.end is not None:
        if source.end <= source.start or source.start < 0:
            raise AudioError(f"{source}: segment end {source.end} is not after start {source.start}")
        return source.end - source.start
    if isinstance(source, EmbeddedAudio):
        target = source.open()
    elif not os.path.isfile(source.location):
        raise AudioError(
            f"{source}: no such file" if not os.path.isdir(source.location) else f"{source}: is a directory"
        )
    else:
        target = source.location
    try:
        info = sf.info(target)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(f"{source}: cannot read audio header ({error})") from None
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{source}: sample rate {info.samplerate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]"
        )
    total = info.frames / info.samplerate
    start = source.start or 0.0
    if start >= total and total > 0:
        raise AudioError(f"{source}: segment start {start} s is beyond the recording ({total:.2f} s)")
    return max(0.0, total - start)


def normalize_waveform(wave: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the utterance (fairseq's ``task.normalize``)."""
    if wave.numel() == 0:
        return wave
    return torch.nn.functional.layer_norm(wave, wave.shape)
