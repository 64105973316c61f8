"""Transcript writers: txt, json (segments and words), ctm, srt, vtt."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .align import WordTiming

FORMATS = ("txt", "json", "ctm", "srt", "vtt")


@dataclass
class Transcript:
    utt_id: str
    audio: str
    text: str
    duration: float
    words: list[WordTiming] = field(default_factory=list)


@dataclass
class Segment:
    start: float
    end: float
    text: str


def segments(transcript: Transcript, max_words: int = 12, max_seconds: float = 6.0,
             pause: float = 0.6) -> list[Segment]:
    """Group words into subtitle segments, breaking at long pauses or size limits."""
    if not transcript.words:
        return [Segment(0.0, transcript.duration, transcript.text)] if transcript.text else []
    result, current = [], []
    for word in transcript.words:
        if current and (len(current) >= max_words or word.end - current[0].start > max_seconds
                        or word.start - current[-1].end > pause):
            result.append(Segment(current[0].start, current[-1].end, " ".join(w.word for w in current)))
            current = []
        current.append(word)
    result.append(Segment(current[0].start, current[-1].end, " ".join(w.word for w in current)))
    return result


def _clock(seconds: float, separator: str) -> str:
    millis = int(round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_txt(t: Transcript) -> str:
    return t.text + "\n"


def to_json(t: Transcript) -> str:
    payload = {"utt_id": t.utt_id, "audio": t.audio, "text": t.text, "duration": round(t.duration, 3),
               "segments": [asdict(s) for s in segments(t)],
               "words": [{**asdict(w), "start": round(w.start, 3), "end": round(w.end, 3),
                          "confidence": round(w.confidence, 4)} for w in t.words]}
    return json.dumps(payload, ensure_ascii=False, indent=2) + "\n"


def to_ctm(t: Transcript) -> str:
    return "".join(f"{t.utt_id} 1 {w.start:.2f} {w.end - w.start:.2f} {w.word} {w.confidence:.3f}\n" for w in t.words)


def to_srt(t: Transcript) -> str:
    blocks = [f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n"
              for i, s in enumerate(segments(t), start=1)]
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    blocks = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in segments(t)]
    return "WEBVTT\n\n" + "\n".join(blocks)


WRITERS = {"txt": to_txt, "json": to_json, "ctm": to_ctm, "srt": to_srt, "vtt": to_vtt}
