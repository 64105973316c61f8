"""Word timestamps from CTC forced alignment (``torchaudio.functional.forced_align``).

A wav2vec2 frame t starts at sample ``t * hop`` (hop = the CNN's total stride, 320 = 20 ms at 16 kHz), so
times are exact multiples of the frame stride. A word spans from its first token's first frame to its last
token's last frame; its confidence is the mean posterior of its tokens along the alignment.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class WordTiming:
    word: str
    start: float  # seconds
    end: float  # seconds
    confidence: float


class AlignmentError(ValueError):
    pass


def align_words(log_probs: torch.Tensor, token_ids: list[int], words: list[str], boundary: int,
                frame_seconds: float, blank: int = 0) -> list[WordTiming]:
    """Align ``token_ids`` (words separated by ``boundary``) to log_probs (T, V); one timing per word."""
    import torchaudio.functional as AF

    if not token_ids:
        return []
    frames = log_probs.shape[0]
    repeats = sum(a == b for a, b in zip(token_ids, token_ids[1:]))
    if frames < len(token_ids) + repeats:
        raise AlignmentError(f"{len(token_ids)} tokens do not fit in {frames} frames")
    targets = torch.tensor([token_ids], dtype=torch.int32)
    path, scores = AF.forced_align(log_probs[None].float().cpu(), targets, blank=blank)
    spans = AF.merge_tokens(path[0], scores[0].exp())
    timings, current = [], []
    for span in spans + [None]:
        if span is None or span.token == boundary:
            if current:
                word = words[len(timings)]
                conf = sum(s.score for s in current) / len(current)
                timings.append(WordTiming(word, current[0].start * frame_seconds, current[-1].end * frame_seconds,
                                          float(conf)))
                current = []
            continue
        current.append(span)
    if len(timings) != len(words):
        raise AlignmentError(f"aligned {len(timings)} words for {len(words)} in the transcript")
    return timings
