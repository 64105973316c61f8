"""Perplexity of a language model on text files: ``seqattn eval-lm MODEL_DIR FILE...``.

Each file is read as a stream (binary chunks, incremental UTF-8 decoding, cut at line ends), tokenized
with the model's own tokenizer, prefixed with ``<bos>`` as in training, and scored token by token:

- **blocks** (``--context N`` alone): non-overlapping windows of N input tokens; a token sees only the
  tokens of its own block before it;
- **sliding window** (``--context N --stride S``): windows of N tokens starting every S tokens; each window
  scores only its last S targets (the first window scores all of its own), so every token is scored
  exactly once with at least N - S tokens of context, as in fairseq's ``eval_lm --context-window`` and the
  HF perplexity guide. ``S = N`` is the blocks scheme.

Metrics: token perplexity ``exp(NLL / tokens)``; word perplexity ``exp(NLL / words)`` over whitespace
words (comparable across tokenizers of the same text); bits per byte ``NLL / ln 2 / UTF-8 bytes``
(tokenizer-independent).
"""
from __future__ import annotations

import codecs
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from seqattn.data.hf_datasets import DatasetSpecError, dataset_text_column, is_dataset_spec
from seqattn.data.longrange import CLASS_NAMES, copy_source_classes
from seqattn.errors import SeqattnError


class LMEvalError(SeqattnError, ValueError):
    """A file that cannot be scored (missing, not UTF-8); the message names the file and byte offset."""


@dataclass
class Score:
    name: str
    tokens: int = 0  # tokens scored (excluding <bos>)
    words: int = 0
    bytes: int = 0
    nll: float = 0.0  # nats, summed
    error: str | None = None
    # with a copy window: {class: [tokens, nll]} for the classes of seqattn.data.longrange (novel/within/beyond)
    copy_source: dict | None = None

    def add(self, other: Score) -> None:
        self.tokens += other.tokens
        self.words += other.words
        self.bytes += other.bytes
        self.nll += other.nll
        if other.copy_source is not None:
            if self.copy_source is None:
                self.copy_source = {name: [0, 0.0] for name in other.copy_source}
            for name, (tokens, nll) in other.copy_source.items():
                self.copy_source[name][0] += tokens
                self.copy_source[name][1] += nll

    def to_json(self) -> dict:
        values = asdict(self)
        values["token_ppl"] = math.exp(self.nll / self.tokens) if self.tokens else None
        values["word_ppl"] = math.exp(min(self.nll / self.words, 700)) if self.words else None
        values["bits_per_byte"] = self.nll / math.log(2) / self.bytes if self.bytes else None
        values["loss"] = self.nll / self.tokens if self.tokens else None
        if self.error is None and self.tokens == 0:
            values["error"] = "empty: no text to score"
        if self.copy_source is not None:
            values["copy_source"] = {name: {"tokens": tokens, "loss": nll / tokens if tokens else None}
                                     for name, (tokens, nll) in self.copy_source.items()}
        return values


def text_chunks(path: str | os.PathLike, errors: str = "strict", chunk_bytes: int = 1 << 20):
    """Decoded text of a file in pieces that end at a line end (or, for a huge line, at whitespace).

    Invalid UTF-8 raises :class:`LMEvalError` with its byte offset, unless ``errors="replace"``. An HF dataset
    spec (:mod:`seqattn.data.hf_datasets`) gives its text column, one row per line.
    """
    if is_dataset_spec(path):
        yield from _dataset_chunks(str(path), chunk_bytes)
        return
    path = Path(path)
    if path.is_dir():
        raise LMEvalError(f"{path}: is a directory, not a text file")
    if not path.is_file():
        raise LMEvalError(f"{path}: no such file")
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    consumed, rest = 0, ""
    with open(path, "rb") as handle:
        while True:
            raw = handle.read(chunk_bytes)
            held = len(decoder.getstate()[0])  # bytes of an incomplete character kept from the last chunk
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as error:  # error.start indexes the held bytes + this chunk
                offset = consumed - held + error.start
                raise LMEvalError(f"{path}: invalid UTF-8 at byte {offset} ({error.reason}); pass --errors replace "
                                  "to score it with U+FFFD in place of the bad bytes") from None
            consumed += len(raw)
            text = rest + text
            if not raw:
                if text:
                    yield text
                return
            cut = text.rfind("\n") + 1
            if cut == 0 and len(text) > 4 * chunk_bytes:  # one huge line: cut at whitespace, else anywhere
                cut = max(text.rfind(" "), text.rfind("\t")) + 1 or len(text)
            rest = text[cut:]
            if cut:
                yield text[:cut]


def _dataset_chunks(spec: str, chunk_bytes: int):
    """The rows of a dataset's text column, joined by line ends, in pieces of about ``chunk_bytes``."""
    piece, size = [], 0
    for row in dataset_text_column(spec):
        line = row if row.endswith("\n") else row + "\n"
        piece.append(line)
        size += len(line)
        if size >= chunk_bytes:
            yield "".join(piece)
            piece, size = [], 0
    if piece:
        yield "".join(piece)


class WindowScorer:
    """Scores a token stream with windows of ``context`` input tokens starting every ``stride`` tokens.

    With ``copy_window`` W, every scored target is also classed by where, inside its window, the n-gram ending
    with it last occurred (:func:`seqattn.data.longrange.copy_source_classes`): within W tokens, only beyond
    W, or nowhere; ``class_totals`` then holds each class's [targets, summed NLL]: how much of the loss a
    model's long-range attention could remove."""

    def __init__(self, model, context: int, stride: int, batch_size: int = 8, device: str = "cpu",
                 copy_window: int | None = None):
        if context < 1 or not 1 <= stride <= context:
            raise LMEvalError(f"need context >= 1 and 1 <= stride <= context, got context={context} stride={stride}")
        if copy_window is not None and copy_window < 1:
            raise LMEvalError(f"copy_window must be >= 1 tokens, got {copy_window}")
        self.model, self.context, self.stride = model, context, stride
        self.batch_size, self.device = batch_size, device
        self.copy_window = copy_window
        self.class_totals = None if copy_window is None else {name: [0, 0.0] for name in CLASS_NAMES}

    @torch.no_grad()
    def _nll(self, windows: list[np.ndarray], first_scored: list[int]) -> torch.Tensor:
        """Sum of NLL over the targets ``window[j + 1]`` with ``j >= first_scored`` of each window, as a
        float64 scalar on the model's device (read once per file, by :meth:`score`)."""
        batch = torch.from_numpy(np.stack(windows).astype(np.int64)).to(self.device, non_blocking=True)  # (b, n + 1)
        logits = self.model(batch[:, :-1]).logits.float()  # (b, n, V)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")  # (b, n)
        first = torch.tensor(first_scored).to(nll.device, non_blocking=True)  # (b,)
        keep = torch.arange(nll.shape[1], device=nll.device)[None, :] >= first[:, None]  # (b, n)
        if self.class_totals is not None:
            scored_nll, kept = nll.cpu().numpy(), keep.cpu().numpy()
            for row, window in enumerate(windows):
                classes = copy_source_classes(window, self.copy_window)[1:]  # (n,) class of each target
                for value, name in enumerate(CLASS_NAMES):
                    chosen = kept[row] & (classes == value)
                    self.class_totals[name][0] += int(chosen.sum())
                    self.class_totals[name][1] += float(scored_nll[row][chosen].sum())
        return (nll * keep).sum(dtype=torch.float64)

    def score(self, tokens_stream) -> tuple[float, int]:
        """(sum of NLL, targets scored) over a stream of token-id lists; the first token is context only."""
        buffer = np.zeros(0, dtype=np.int64)
        start = 0  # absolute position of buffer[0]
        next_target = 1  # absolute position of the next token to score
        total, scored = torch.zeros((), dtype=torch.float64, device=self.device), 0
        pending, pending_first = [], []

        def flush():
            nonlocal total
            if pending:
                total += self._nll(pending, pending_first)
                pending.clear()
                pending_first.clear()

        for ids in tokens_stream:
            buffer = np.concatenate([buffer, np.asarray(ids, dtype=np.int64)])
            while buffer.shape[0] >= self.context + 1:
                first = next_target - start - 1  # first target index inside this window
                pending.append(buffer[: self.context + 1])
                pending_first.append(first)
                scored += self.context - first
                next_target = start + self.context + 1
                if len(pending) == self.batch_size:
                    flush()
                buffer, start = buffer[self.stride :], start + self.stride
        flush()
        if buffer.shape[0] >= 2 and start + buffer.shape[0] > next_target:  # the last, shorter window
            first = next_target - start - 1
            total += self._nll([buffer], [first])
            scored += buffer.shape[0] - 1 - first
        return float(total), scored  # the stream's one read of the device


def score_file(path, tokenizer, scorer: WindowScorer, errors: str = "strict", progress: bool = True) -> Score:
    result = Score(str(path))
    counts = {"words": 0, "bytes": 0}

    def stream(bar):
        yield [tokenizer.bos_id]
        for text in text_chunks(path, errors):
            size = len(text.encode("utf-8"))
            counts["words"] += len(text.split())
            counts["bytes"] += size
            bar.update(size)
            yield tokenizer.encode(text)

    size = Path(path).stat().st_size if Path(path).is_file() else 0
    if scorer.class_totals is not None:
        scorer.class_totals = {name: [0, 0.0] for name in scorer.class_totals}  # this file's own totals
    with tqdm(total=size, unit="B", unit_scale=True, desc=Path(path).name, disable=not progress, leave=False) as bar:
        result.nll, result.tokens = scorer.score(stream(bar))
    if scorer.class_totals is not None:
        result.copy_source = {name: list(totals) for name, totals in scorer.class_totals.items()}
    result.words, result.bytes = counts["words"], counts["bytes"]
    return result


def evaluate_files(model, tokenizer, paths: list[str], *, context: int, stride: int | None = None,
                   batch_size: int = 8, errors: str = "strict", device: str = "cpu",
                   progress: bool = True, copy_window: int | None = None) -> tuple[list[Score], Score]:
    """Score every file (a failing file is reported and the others go on); returns (per file, overall).
    ``copy_window``: also split the loss by copy source (:class:`WindowScorer`)."""
    model.eval()
    scorer = WindowScorer(model, context, stride or context, batch_size, device, copy_window)
    per_file, overall = [], Score("overall")
    for path in paths:
        try:
            score = score_file(path, tokenizer, scorer, errors, progress)
            overall.add(score)
        except (LMEvalError, DatasetSpecError) as error:  # reported; the other files go on
            score = Score(str(path), error=str(error))
        per_file.append(score)
    return per_file, overall
