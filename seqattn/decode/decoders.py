"""CTC decoders behind one interface: greedy, and beam search with an optional lexicon and KenLM.

Each decodes a whole input's log-probabilities at once (``decode``) or an input fed in consecutive pieces
(``begin``, ``step`` per piece, ``end``; how streamed files are decoded), and returns a :class:`Decoded`:
the token ids, blanks dropped, and for greedy decoding the per-frame path from which inputs too long for
forced alignment take their word times.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from seqattn.data.text import CharVocabulary
from seqattn.models.io import ModelDirError

from .align import GreedyPath


@dataclass
class Decoded:
    tokens: list[int]  # the hypothesis, blanks dropped
    path: GreedyPath | None = None  # greedy decoding's argmax path; None for beam search


class GreedyDecoder:
    """The per-frame argmax, repeats merged and blanks dropped; keeps 8 bytes per frame."""

    def __init__(self):
        self._paths: list[GreedyPath] = []

    def decode(self, log_probs: torch.Tensor) -> Decoded:
        """log_probs (T, V) -> Decoded."""
        path = GreedyPath.of(log_probs)
        return Decoded(path.tokens(), path)

    def begin(self) -> None:
        self._paths = []

    def step(self, log_probs: torch.Tensor) -> None:
        self._paths.append(GreedyPath.of(log_probs))  # (T_piece, V) -> 8 bytes per frame

    def end(self) -> Decoded:
        path, self._paths = GreedyPath.cat(self._paths), []
        return Decoded(path.tokens(), path)


class Beam:
    """Beam search through torchaudio's flashlight-text CTC decoder (lexicon-free or lexicon + KenLM)."""

    def __init__(self, vocab: CharVocabulary, beam_size: int, lm: str | None, lexicon: str | None,
                 lm_weight: float, word_score: float, sil_score: float = 0.0):
        try:
            from torchaudio.models.decoder import ctc_decoder
        except (ImportError, RuntimeError) as error:  # flashlight-text is an optional dependency
            raise ModelDirError(f"beam search needs flashlight-text (pip install flashlight-text): {error}") from None
        for name, path in (("--lm", lm), ("--lexicon", lexicon)):
            if path is not None and not Path(path).is_file():
                raise ModelDirError(f"{name} file {path} does not exist")
        self.vocab = vocab
        self.decoder = ctc_decoder(
            lexicon=lexicon, tokens=vocab.tokens, lm=lm, nbest=1, beam_size=beam_size, lm_weight=lm_weight,
            word_score=word_score, sil_score=sil_score, blank_token=vocab.tokens[0], sil_token="|",
            unk_word=vocab.tokens[1],
        )

    def __call__(self, log_probs: torch.Tensor) -> list[int]:
        """Token ids (blanks dropped) of the best hypothesis for log_probs (T, V)."""
        hypothesis = self.decoder(log_probs[None].float().contiguous())[0][0]
        return [t for t in hypothesis.tokens.tolist() if t != 0]

    def decode(self, log_probs: torch.Tensor) -> Decoded:
        return Decoded(self(log_probs))

    def begin(self) -> None:
        self.decoder.decode_begin()

    def step(self, log_probs: torch.Tensor) -> None:
        self.decoder.decode_step(log_probs.float().cpu().contiguous())  # (T_piece, V)

    def end(self) -> Decoded:
        self.decoder.decode_end()
        hypothesis = self.decoder.get_final_hypothesis()[0]
        return Decoded([t for t in hypothesis.tokens.tolist() if t != 0])
