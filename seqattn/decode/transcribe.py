"""Batch transcription with a fine-tuned CTC model directory: inputs, long audio, decoding, timestamps.

Every input ends either transcribed or listed as failed with its reason (``inputs = transcribed + failed``).
Long inputs:
- a model whose every head is local streams a plain file longer than ten minutes through the network window
  by window: the same logits as one pass, with memory bounded by the window (the file is read from disk as
  needed, greedy decoding keeps 8 bytes per frame, beam search is fed window by window);
- a model with routing heads (unbounded reach) runs one pass, memory linear in the input's length;
- a model with any full-attention layer is run on overlapping chunks whose logits are stitched.
How each of these turns audio into logits is ``models.wav2vec2.longform``. Here a :class:`Transcriber`
reads each input (loaded whole, streamed, or skipped as empty or silent), batches loaded ones by length
(``batching``), decodes with a greedy or beam decoder (``decoders``) and reports every input.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seqattn.data.audio import AudioError, AudioSource, load_audio, normalize_waveform
from seqattn.data.audio_stream import StreamingAudio
from seqattn.data.hf_datasets import DatasetSpecError, is_dataset_spec, read_dataset
from seqattn.data.kaldi import read_data_dir
from seqattn.data.text import CharVocabulary
from seqattn.data.unlabelled import read_utterances
from seqattn.data.vocabulary import VOCAB_FILE, load_vocabulary
from seqattn.models.io import ModelDirError, load_model
from seqattn.models.wav2vec2.longform import CTCInference, LongFormCTC
from seqattn.utils.malloc import release_free_memory

from .align import MAX_ALIGN_FRAMES, AlignmentError, align_words, greedy_path_words
from .batching import LengthBatcher
from .decoders import Beam, Decoded, GreedyDecoder
from .writers import Transcript

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au", ".sph"}


@dataclass
class InputItem:
    utt_id: str
    source: AudioSource
    reference: str | None = None
    language: str | None = None  # needed to write the script of a common-label (multi-script) model


@dataclass
class Failure:
    name: str
    reason: str


@dataclass
class TranscriptionResult:
    transcripts: list[Transcript] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    references: dict[str, str] = field(default_factory=dict)
    languages: dict[str, str] = field(default_factory=dict)  # utt_id -> language, where the input names one
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def rtf(self) -> float:
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else 0.0


def collect_inputs(
    paths: list[str], data_dir: str | None = None, manifest: str | None = None
) -> tuple[list[InputItem], list[Failure]]:
    """Files, directories (searched recursively for audio) and HF datasets, a Kaldi data dir, and a JSONL,
    fairseq ``.tsv`` or HF dataset manifest."""
    items, failures, seen = [], [], set()

    def add(item: InputItem):
        utt = item.utt_id
        suffix = 1
        while item.utt_id in seen:  # two files with the same stem in different folders
            suffix += 1
            item.utt_id = f"{utt}-{suffix}"
        seen.add(item.utt_id)
        items.append(item)

    for path in paths:
        p = Path(path)
        if is_dataset_spec(path):  # an HF dataset (save_to_disk directory, parquet/arrow files) as a positional
            try:
                rows = read_dataset(path)
            except DatasetSpecError as error:  # reported like an unreadable file; the other inputs go on
                failures.append(Failure(path, str(error)))
                continue
            for utt in rows:
                add(InputItem(utt.utt_id, utt.source, utt.text, utt.language))
        elif p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and (f.is_file() or f.is_symlink())
            )
            if not found:
                failures.append(Failure(path, "directory holds no audio files"))
            for f in found:
                add(InputItem(f.stem, AudioSource(str(f))))
        elif p.exists() or p.is_symlink():
            add(InputItem(p.stem or p.name, AudioSource(str(p))))
        else:
            failures.append(Failure(path, "no such file or directory"))
    if data_dir is not None:
        data = read_data_dir(data_dir, fix=True, check_audio=False)
        dropped = {p.key for p in data.problems if p.key is not None}
        for key in sorted(dropped):  # utterances the data dir names but cannot give: each one a failed input
            reasons = "; ".join(str(p) for p in data.problems if p.key == key)
            failures.append(Failure(key, f"invalid data-dir entry: {reasons}"))
        for utt in data.utterances:
            add(InputItem(utt.utt_id, utt.source, utt.text, utt.language))
    if manifest is not None:  # JSONL (NeMo style), a fairseq .tsv with its .wrd/.ltr transcripts, an HF dataset
        for utt in read_utterances(manifest, None, fix=False)[0]:
            add(InputItem(utt.utt_id, utt.source, utt.text, utt.language))
    return items, failures


def load_recognizer(model_dir: str | os.PathLike, device: str = "cpu"):
    model = load_model(model_dir, device)
    if not hasattr(model, "head"):
        raise ModelDirError(f"{model_dir} is not a CTC model (model_type must be wav2vec2_ctc)")
    vocab_path = Path(model_dir) / VOCAB_FILE
    if not vocab_path.is_file():
        raise ModelDirError(f"{model_dir} is incomplete: {VOCAB_FILE} (the output vocabulary) is missing")
    vocab = load_vocabulary(vocab_path)
    if len(vocab) != model.config.vocab_size:
        raise ModelDirError(f"{vocab_path} has {len(vocab)} tokens but the model outputs {model.config.vocab_size}")
    return model, vocab


def strip_boundaries(tokens: list[int], boundary: int) -> list[int]:
    """Collapse repeated word boundaries and drop leading/trailing ones."""
    result = []
    for t in tokens:
        if t == boundary and (not result or result[-1] == boundary):
            continue
        result.append(t)
    while result and result[-1] == boundary:
        result.pop()
    return result


ALONE_SECONDS = 60.0  # longer inputs are never padded into a batch with others
STREAM_SECONDS = 600.0  # plain files longer than this stream through a local-attention model
TRIM_EVERY = 16  # inputs between returns of freed heap memory to the kernel (docs/RELIABILITY.md, Load)


@dataclass
class Loaded:
    """An input read whole, ready for the encoder."""

    index: int  # position in the input list, so outputs keep the input order
    item: InputItem
    wave: torch.Tensor  # (S,) at the model's rate, normalised if the model expects it, on the model's device
    seconds: float


@dataclass
class Streaming:
    """A plain file long enough to stream window by window; ``stream`` is open until it is decoded."""

    index: int
    item: InputItem
    stream: StreamingAudio

    @property
    def seconds(self) -> float:
        return self.stream.seconds


@dataclass
class Skipped:
    """An input with nothing to transcribe: shorter than one frame, or silent. It gets an empty transcript."""

    index: int
    item: InputItem
    seconds: float
    why: str  # "empty" or "silent"


def transcribe(
    model,
    vocab: CharVocabulary,
    items: list[InputItem],
    *,
    sample_rate: int = 16000,
    chunk_seconds: float | None = None,
    beam: Beam | None = None,
    timestamps: bool = True,
    batch_size: int = 1,
    allow_pipes: bool = True,
    pipe_timeout: float = 120.0,
    progress: bool = True,
    stream_seconds: float = STREAM_SECONDS,
) -> TranscriptionResult:
    """Transcribe every item fully, whatever its length.

    ``chunk_seconds=None`` chooses: chunks of 30 s for models with full attention, one pass otherwise; 0 forces
    one pass. A model whose heads are all local takes plain files longer than ``stream_seconds`` window by
    window instead of in one pass (the same logits, memory bounded). ``batch_size`` > 1 runs up to that many
    utterances of similar length through the encoder together (each still gets its own CNN pass, so the result
    equals unbatched decoding up to float rounding); inputs longer than a minute or than ``chunk_seconds`` are
    always run alone.
    """
    transcriber = Transcriber(
        model,
        vocab,
        sample_rate=sample_rate,
        chunk_seconds=chunk_seconds,
        beam=beam,
        timestamps=timestamps,
        batch_size=batch_size,
        allow_pipes=allow_pipes,
        pipe_timeout=pipe_timeout,
        stream_seconds=stream_seconds,
    )
    return transcriber.run(items, progress)


class Transcriber:
    """One transcription run: its settings, and as explicit state the result being built and the
    transcripts finished so far (kept with their input positions, so the output follows the input order)."""

    def __init__(
        self,
        model,
        vocab: CharVocabulary,
        *,
        sample_rate: int = 16000,
        chunk_seconds: float | None = None,
        beam: Beam | None = None,
        timestamps: bool = True,
        batch_size: int = 1,
        allow_pipes: bool = True,
        pipe_timeout: float = 120.0,
        stream_seconds: float = STREAM_SECONDS,
    ):
        self.vocab, self.sample_rate, self.timestamps = vocab, sample_rate, timestamps
        self.allow_pipes, self.pipe_timeout, self.stream_seconds = allow_pipes, pipe_timeout, stream_seconds
        # a seqattn model runs in PyTorch; a CTCInference (an exported ONNX graph) is used as it is
        self.inference = model if isinstance(model, CTCInference) else LongFormCTC(model)
        self.normalize = self.inference.normalize
        self.device = self.inference.device
        if chunk_seconds is None:
            chunk_seconds = self.inference.default_chunk_seconds
        self.chunk_seconds = chunk_seconds
        self.streamable = chunk_seconds == 0 and self.inference.streamable
        self.decoder = beam if beam is not None else GreedyDecoder()
        self.batcher: LengthBatcher[Loaded] = LengthBatcher(batch_size, length=lambda loaded: loaded.wave.numel())
        self.boundary = vocab.index["|"]
        self.result = TranscriptionResult()
        self.finished: list[tuple[int, Transcript]] = []

    def run(self, items: list[InputItem], progress: bool = True) -> TranscriptionResult:
        from tqdm import tqdm

        if self.vocab.common_script and any(item.language is None for item in items):
            self.result.warnings.append(
                "this model writes a common label set for all Indic scripts; inputs "
                "without a language (utt2lang, a manifest's language, or --language) "
                "come out in Devanagari"
            )
        started = time.perf_counter()
        for index, item in enumerate(tqdm(items, desc="transcribe", unit="file", disable=not progress)):
            if index % TRIM_EVERY == TRIM_EVERY - 1:
                release_free_memory()  # the heap of many differently sized inputs would otherwise only grow
            self._take(index, item)
        for batch in self.batcher.flush():
            self._decode_batch(batch)
        self.result.transcripts = [t for _, t in sorted(self.finished, key=lambda pair: pair[0])]
        self.result.wall_seconds = time.perf_counter() - started
        return self.result

    # --- reading ----------------------------------------------------------------------------------------------

    def read(self, index: int, item: InputItem) -> Loaded | Streaming | Skipped:
        """Read one input: whole (pipes and dataset rows always: they cannot seek), or, for a plain file long
        enough for a streamable model, as an open stream. Raises AudioError for unusable audio."""
        if not item.source.seekable:
            wave = load_audio(
                item.source, self.sample_rate, allow_pipes=self.allow_pipes, pipe_timeout=self.pipe_timeout
            )
            return self._prepared(index, item, wave)
        stream = StreamingAudio(item.source, self.sample_rate)  # one open per file: its header decides
        if self._streams(stream):
            return Streaming(index, item, stream)  # the caller decodes it, then closes it
        with stream:
            wave = stream.read(0, stream.num_samples)
        return self._prepared(index, item, wave)

    def _streams(self, stream: StreamingAudio) -> bool:
        return (
            self.streamable
            and stream.seconds > self.stream_seconds
            and stream.num_samples >= self.inference.min_samples
        )

    def _prepared(self, index: int, item: InputItem, wave: torch.Tensor) -> Loaded | Skipped:
        seconds = wave.numel() / self.sample_rate
        if wave.numel() < self.inference.min_samples:  # gives no frame
            return Skipped(index, item, seconds, "empty")
        if float(wave.abs().max()) == 0.0:
            return Skipped(index, item, seconds, "silent")
        if self.normalize:
            wave = normalize_waveform(wave)
        return Loaded(index, item, wave.to(self.device, non_blocking=True), seconds)

    def _take(self, index: int, item: InputItem) -> None:
        """Read, then transcribe now (streamed, chunked, long or unbatched inputs) or queue for a batch."""
        outcome = None
        try:
            outcome = self.read(index, item)
            if isinstance(outcome, Streaming):
                with outcome.stream:
                    self._decode_stream(outcome)
        except AudioError as error:
            self.result.failures.append(Failure(item.utt_id, str(error)))
            return
        except MemoryError:
            streamed = isinstance(outcome, Streaming)
            self.result.failures.append(
                Failure(
                    item.utt_id,
                    "out of memory while reading the audio"
                    + (" or streaming it through the model" if streamed else ""),
                )
            )
            return
        self.result.audio_seconds += outcome.seconds
        if item.reference is not None:
            self.result.references[item.utt_id] = self.vocab.normalize(item.reference)
        if item.language is not None:
            self.result.languages[item.utt_id] = item.language
        if isinstance(outcome, Skipped):
            self._empty(outcome.index, item, outcome.seconds, outcome.why)
        elif isinstance(outcome, Loaded):
            if self.chunk_seconds and outcome.seconds > self.chunk_seconds:
                chunk = int(self.chunk_seconds * self.sample_rate)
                self._decode_logits(outcome, self.inference.chunked_logits(outcome.wave, chunk, overlap=chunk // 6))
            elif outcome.seconds > ALONE_SECONDS or self.batcher.batch_size == 1:
                self._decode_logits(outcome, self.inference.logits([outcome.wave])[0])
            else:
                for batch in self.batcher.add(outcome):
                    self._decode_batch(batch)

    # --- decoding ---------------------------------------------------------------------------------------------

    def _decode_batch(self, batch: list[Loaded]) -> None:
        try:
            outputs = self.inference.logits([loaded.wave for loaded in batch])
        except MemoryError:
            for loaded in batch:  # reported like an unreadable input; the others go on
                self.result.failures.append(
                    Failure(
                        loaded.item.utt_id,
                        f"out of memory in the encoder ({loaded.seconds:.0f} s of audio); try --chunk-seconds 600",
                    )
                )
            return
        for loaded, logits in zip(batch, outputs):
            self._decode_logits(loaded, logits)

    def _decode_logits(self, loaded: Loaded, logits: torch.Tensor) -> None:
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (T, V)
        self._finish(
            loaded.index, loaded.item, loaded.seconds, self.decoder.decode(log_probs), log_probs.shape[0], log_probs
        )

    def _decode_stream(self, streaming: Streaming) -> None:
        """Decode a long file window by window; raises AudioError for unusable audio met on the way."""
        stream, item = streaming.stream, streaming.item
        statistics = stream.statistics()  # also finds non-finite samples before any model time is spent
        if statistics.peak == 0.0:
            self._empty(streaming.index, item, stream.seconds, "silent")
            return
        shift, scale = 0.0, 1.0
        if self.normalize:  # as normalize_waveform: layer norm over the whole recording
            shift, scale = statistics.mean, (statistics.variance + 1e-5) ** -0.5

        def read(start: int, stop: int) -> torch.Tensor:  # model-ready samples, on their way to the model's device
            return ((stream.read(start, stop) - shift) * scale).to(self.device, non_blocking=True)

        kept, frames = [], 0  # kept: the windows' log-probs while forced alignment can use them
        self.decoder.begin()
        for logits in self.inference.stream_logits(read, stream.num_samples):
            log_probs = torch.log_softmax(logits.float(), dim=-1)  # (frames of this window, V)
            frames += log_probs.shape[0]
            if frames <= MAX_ALIGN_FRAMES:
                kept.append(log_probs)
            else:
                kept.clear()
            self.decoder.step(log_probs)
        log_probs = torch.cat(kept) if kept else None  # word times as the one-pass path gives them
        self._finish(streaming.index, item, stream.seconds, self.decoder.end(), frames, log_probs)

    def _empty(self, index: int, item: InputItem, seconds: float, why: str) -> None:
        self.result.warnings.append(f"{item.utt_id}: {why} audio, empty transcript")
        self.finished.append((index, Transcript(item.utt_id, str(item.source), "", seconds)))

    def _finish(
        self, index: int, item: InputItem, seconds: float, decoded: Decoded, frames: int, log_probs: torch.Tensor | None
    ) -> None:
        """Text and word times of a decoded input; times come from forced alignment on ``log_probs`` (T, V) up
        to MAX_ALIGN_FRAMES frames, else from the greedy path of a greedy transcript."""
        tokens = strip_boundaries(decoded.tokens, self.boundary)
        text = self.vocab.decode(tokens, item.language)
        words = self._word_times(item, tokens, text, frames, log_probs, decoded) if self.timestamps and text else []
        self.finished.append((index, Transcript(item.utt_id, str(item.source), text, seconds, words)))

    def _word_times(self, item: InputItem, tokens: list[int], text: str, frames: int, log_probs, decoded: Decoded):
        frame_seconds = self.inference.hop / self.sample_rate
        try:
            if log_probs is not None and frames <= MAX_ALIGN_FRAMES:
                return align_words(log_probs, tokens, text.split(), self.boundary, frame_seconds)
            if decoded.path is not None:  # long input, greedy transcript: its own path is its best alignment
                return greedy_path_words(decoded.path, text.split(), self.boundary, frame_seconds)
            raise AlignmentError(
                f"beam-search output is force-aligned up to {MAX_ALIGN_FRAMES} frames and this "
                f"input has {frames}; use greedy decoding for word times of longer inputs"
            )
        except AlignmentError as error:
            self.result.warnings.append(f"{item.utt_id}: no word timestamps ({error})")
        except MemoryError:
            self.result.warnings.append(f"{item.utt_id}: no word timestamps (out of memory while aligning)")
        return []


@dataclass(frozen=True)
class ErrorCounts:
    """Edit-distance counts of hypotheses against references, in words or characters."""

    substitutions: int
    deletions: int
    insertions: int
    hits: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def reference_length(self) -> int:
        return self.substitutions + self.deletions + self.hits

    @property
    def rate(self) -> float:
        """Errors per hundred reference units (%WER / %CER)."""
        return 100.0 * self.errors / max(self.reference_length, 1)

    def kaldi_line(self, name: str) -> str:
        """``%WER 12.50 [ 3 / 24, 1 ins, 0 del, 2 sub ]``, as Kaldi's compute-wer prints it."""
        return (
            f"%{name} {self.rate:.2f} [ {self.errors} / {self.reference_length}, {self.insertions} ins, "
            f"{self.deletions} del, {self.substitutions} sub ]"
        )


def error_counts(refs: list[str], hyps: list[str]) -> tuple[ErrorCounts, ErrorCounts, object]:
    """Word and character error counts over all pairs, and jiwer's word alignment."""
    import jiwer

    def counts(out) -> ErrorCounts:
        return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits)

    words = jiwer.process_words(refs, hyps)
    return counts(words), counts(jiwer.process_characters(refs, hyps)), words


def kaldi_scores(refs: list[str], hyps: list[str]) -> tuple[str, str, object]:
    """Kaldi-style ``%WER`` and ``%CER`` lines over all pairs, and jiwer's word alignment."""
    words, chars, alignment = error_counts(refs, hyps)
    return words.kaldi_line("WER"), chars.kaldi_line("CER"), alignment


def scores_per_language(result: TranscriptionResult) -> list[str]:
    """``%WER``/``%CER`` lines per language (Kaldi's per-set ``wer`` lines, tagged ``[lang]``), for the scored
    utterances whose language is known; empty when fewer than one language is known."""
    by_language: dict[str, list[tuple[str, str]]] = {}
    for transcript in result.transcripts:
        language = result.languages.get(transcript.utt_id)
        if transcript.utt_id in result.references and language is not None:
            by_language.setdefault(language, []).append((result.references[transcript.utt_id], transcript.text))
    lines = []
    for language, pairs in sorted(by_language.items()):
        wer, cer, _ = kaldi_scores([ref for ref, _ in pairs], [hyp for _, hyp in pairs])
        lines += [f"{wer} [{language}, {len(pairs)} utterances]", f"{cer} [{language}]"]
    return lines


def kaldi_score_lines(result: TranscriptionResult) -> tuple[str, str, list[str]]:
    """Kaldi-style ``%WER``/``%CER`` lines and per-utterance alignments (jiwer) for utterances with references."""
    import jiwer

    pairs = [(result.references[t.utt_id], t.text) for t in result.transcripts if t.utt_id in result.references]
    if not pairs:
        return "", "", []
    refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
    wer, cer, words = kaldi_scores(refs, hyps)
    utts = [t.utt_id for t in result.transcripts if t.utt_id in result.references]
    lines = [f"{utt} ref {ref}\n{utt} hyp {hyp}" for utt, ref, hyp in zip(utts, refs, hyps)]
    alignment = jiwer.visualize_alignment(words, show_measures=False).split("\n")
    return wer, cer, lines + [""] + alignment
