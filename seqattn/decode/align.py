"""Word timestamps from CTC forced alignment (``torchaudio.functional.forced_align``).

A wav2vec2 frame t starts at sample ``t * hop`` (hop = the CNN's total stride, 320 = 20 ms at 16 kHz), so
times are exact multiples of the frame stride. A word spans from its first token's first frame to its last
token's last frame; its confidence is the mean posterior of its tokens along the alignment.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from seqattn.errors import SeqattnError

from .ctc import collapse


@dataclass
class WordTiming:
    word: str
    start: float  # seconds
    end: float  # seconds
    confidence: float


class AlignmentError(SeqattnError, ValueError):
    pass


# forced_align keeps a (frames x 2 * tokens) trellis: beyond this many frames (10 minutes) it is not used
MAX_ALIGN_FRAMES = 30000


@dataclass
class GreedyPath:
    """The per-frame argmax path of log-probabilities and each frame's posterior: all that greedy decoding
    and its word times need, at 8 bytes per frame instead of 4 x V."""

    best: torch.Tensor  # (T,) int64 token per frame
    posterior: torch.Tensor  # (T,) float32 probability of that token

    @classmethod
    def of(cls, log_probs: torch.Tensor) -> GreedyPath:
        best = log_probs.argmax(-1)  # (T,)
        return cls(best, log_probs.gather(1, best[:, None])[:, 0].exp().float())

    @classmethod
    def cat(cls, parts: list[GreedyPath]) -> GreedyPath:
        return cls(torch.cat([p.best for p in parts]), torch.cat([p.posterior for p in parts]))

    def tokens(self, blank: int = 0) -> list[int]:
        """The greedy transcript: the path with repeats merged and blanks dropped."""
        return collapse(self.best.tolist(), blank).tokens


def greedy_path_words(path: GreedyPath, words: list[str], boundary: int, frame_seconds: float,
                      blank: int = 0) -> list[WordTiming]:
    """Word timings read off the greedy (per-frame argmax) path, in O(frames) memory.

    For a greedy transcript this path is a best alignment of that transcript (every frame already takes its
    most likely token): the words and times are forced alignment's, except that forced alignment may hand a
    word the frames of boundary tokens collapsed or stripped from the transcript. A token spans the frames of
    its run in the path; a word spans its tokens.
    """
    best, posterior = path.best.cpu(), path.posterior.cpu()
    change = torch.ones_like(best, dtype=torch.bool)
    change[1:] = best[1:] != best[:-1]
    starts = torch.nonzero(change)[:, 0]  # (R,) first frame of each run
    ends = torch.cat([starts[1:], torch.tensor([best.shape[0]])])  # (R,) one past its last frame
    timings, current = [], []
    for start, end in zip(starts.tolist(), ends.tolist()):
        token = int(best[start])
        if token == blank:
            continue
        if token == boundary:
            if current:
                timings.append(current)
                current = []
            continue
        current.append((start, end, float(posterior[start:end].mean())))
    if current:
        timings.append(current)
    if len(timings) != len(words):
        raise AlignmentError(f"the greedy path holds {len(timings)} words for {len(words)} in the transcript")
    return [WordTiming(word, spans[0][0] * frame_seconds, spans[-1][1] * frame_seconds,
                       sum(c for _, _, c in spans) / len(spans)) for word, spans in zip(words, timings)]


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
