"""Batch transcription with a fine-tuned CTC model directory: inputs, long audio, decoding, timestamps.

Every input ends either transcribed or listed as failed with its reason (``inputs = transcribed + failed``).
Long inputs:
- a model whose every head is local streams a plain file longer than ten minutes through the network window
  by window: the same logits as one pass, with memory bounded by the window (the file is read from disk as
  needed, greedy decoding keeps 8 bytes per frame, beam search is fed window by window);
- a model with routing heads (unbounded reach) runs one pass, memory linear in the input's length;
- a model with any full-attention layer is run on overlapping chunks whose logits are stitched.
How each of these turns audio into logits is ``models.wav2vec2.longform``; this module reads, batches,
decodes and reports.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seqattn.data.audio import AudioError, AudioSource, load_audio, normalize_waveform
from seqattn.data.audio_stream import StreamingAudio
from seqattn.data.kaldi import read_data_dir
from seqattn.data.manifest import read_jsonl_manifest
from seqattn.data.text import CharVocabulary
from seqattn.data.vocabulary import VOCAB_FILE, load_vocabulary
from seqattn.models.io import ModelDirError, load_model
from seqattn.models.wav2vec2.longform import LongFormCTC
from seqattn.utils.malloc import release_free_memory

from .align import (
    MAX_ALIGN_FRAMES,
    AlignmentError,
    GreedyPath,
    align_words,
    greedy_path_words,
)
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
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def rtf(self) -> float:
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else 0.0


def collect_inputs(paths: list[str], data_dir: str | None = None, manifest: str | None = None) -> tuple[list[InputItem], list[Failure]]:
    """Files, directories (searched recursively for audio), a Kaldi data dir or a JSONL manifest."""
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
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and (f.is_file() or f.is_symlink()))
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
    if manifest is not None:
        for utt in read_jsonl_manifest(manifest):
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

    def begin(self) -> None:
        """Online decoding of one input fed in pieces: ``begin``, ``step`` per piece, then ``end``."""
        self.decoder.decode_begin()

    def step(self, log_probs: torch.Tensor) -> None:
        self.decoder.decode_step(log_probs.float().cpu().contiguous())  # (T_piece, V)

    def end(self) -> list[int]:
        self.decoder.decode_end()
        hypothesis = self.decoder.get_final_hypothesis()[0]
        return [t for t in hypothesis.tokens.tolist() if t != 0]


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


@dataclass
class _Loaded:
    index: int  # position in the input list, so outputs keep the input order
    item: InputItem
    wave: torch.Tensor  # (S,) at the model's rate, normalised if the model expects it
    seconds: float


ALONE_SECONDS = 60.0  # longer inputs are never padded into a batch with others
STREAM_SECONDS = 600.0  # plain files longer than this stream through a local-attention model
TRIM_EVERY = 16  # inputs between returns of freed heap memory to the kernel (docs/RELIABILITY.md, Load)


def transcribe(model, vocab: CharVocabulary, items: list[InputItem], *, sample_rate: int = 16000,
               chunk_seconds: float | None = None, beam: Beam | None = None, timestamps: bool = True,
               batch_size: int = 1, allow_pipes: bool = True, pipe_timeout: float = 120.0,
               progress: bool = True, stream_seconds: float = STREAM_SECONDS) -> TranscriptionResult:
    """Transcribe every item fully, whatever its length.

    ``chunk_seconds=None`` chooses: chunks of 30 s for models with full attention, one pass otherwise; 0 forces
    one pass. A model whose heads are all local takes plain files longer than ``stream_seconds`` window by
    window instead of in one pass (the same logits, memory bounded). ``batch_size`` > 1 runs up to that many
    utterances of similar length through the encoder together (each still gets its own CNN pass, so the result
    equals unbatched decoding up to float rounding); inputs longer than a minute or than ``chunk_seconds`` are
    always run alone.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    result = TranscriptionResult()
    if vocab.common_script and any(item.language is None for item in items):
        result.warnings.append("this model writes a common label set for all Indic scripts; inputs without a "
                               "language (utt2lang, a manifest's language, or --language) come out in Devanagari")
    inference = LongFormCTC(model)
    if chunk_seconds is None:
        chunk_seconds = 30.0 if inference.has_full_attention else 0.0
    streamable = chunk_seconds == 0 and inference.streamable
    hop, min_samples = inference.hop, inference.min_samples  # shorter inputs give no frame: empty transcript
    device = next(model.parameters()).device
    boundary = vocab.index["|"]
    finished: list[tuple[int, Transcript]] = []
    pool: list[_Loaded] = []
    pool_size = 1 if batch_size == 1 else 8 * batch_size  # inputs read ahead, then sorted by length into batches

    def finish(index: int, item: InputItem, seconds: float, tokens: list[int], frames: int,
               log_probs: torch.Tensor | None = None, path: GreedyPath | None = None) -> None:
        """Text and word times from decoded ``tokens``; times come from forced alignment on ``log_probs``
        (T, V) up to MAX_ALIGN_FRAMES frames, else from the greedy ``path`` of a greedy transcript."""
        tokens = strip_boundaries(tokens, boundary)
        text = vocab.decode(tokens, item.language)
        words = []
        if timestamps and text:
            try:
                if log_probs is not None and frames <= MAX_ALIGN_FRAMES:
                    words = align_words(log_probs, tokens, text.split(), boundary, hop / sample_rate)
                elif beam is None:  # long input, greedy transcript: its own path is its best alignment
                    words = greedy_path_words(path, text.split(), boundary, hop / sample_rate)
                else:
                    raise AlignmentError(f"beam-search output is force-aligned up to {MAX_ALIGN_FRAMES} frames "
                                         f"and this input has {frames}; use greedy decoding for word "
                                         "times of longer inputs")
            except AlignmentError as error:
                result.warnings.append(f"{item.utt_id}: no word timestamps ({error})")
            except MemoryError:
                result.warnings.append(f"{item.utt_id}: no word timestamps (out of memory while aligning)")
        finished.append((index, Transcript(item.utt_id, str(item.source), text, seconds, words)))

    def finish_logits(loaded: _Loaded, logits: torch.Tensor) -> None:
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (T, V)
        if beam is not None:
            finish(loaded.index, loaded.item, loaded.seconds, beam(log_probs), log_probs.shape[0], log_probs=log_probs)
        else:  # one argmax gives the transcript and, past MAX_ALIGN_FRAMES, the word times
            path = GreedyPath.of(log_probs)
            finish(loaded.index, loaded.item, loaded.seconds, path.tokens(), log_probs.shape[0], log_probs=log_probs,
                   path=path)

    def finish_stream(index: int, item: InputItem, stream: StreamingAudio) -> None:
        """Decode a long file window by window; raises AudioError for unusable audio met on the way."""
        statistics = stream.statistics()  # also finds non-finite samples before any model time is spent
        if statistics.peak == 0.0:
            result.warnings.append(f"{item.utt_id}: silent audio, empty transcript")
            finished.append((index, Transcript(item.utt_id, str(item.source), "", stream.seconds)))
            return
        shift, scale = 0.0, 1.0
        if model.config.normalize_waveform:  # as normalize_waveform: layer norm over the whole recording
            shift, scale = statistics.mean, (statistics.variance + 1e-5) ** -0.5
        read = lambda start, stop: ((stream.read(start, stop) - shift) * scale).to(device)
        paths, kept, frames = [], [], 0  # kept: the windows' log-probs while forced alignment can use them
        if beam is not None:
            beam.begin()
        for logits in inference.stream_logits(read, stream.num_samples):
            log_probs = torch.log_softmax(logits.float(), dim=-1)  # (frames of this window, V)
            frames += log_probs.shape[0]
            if frames <= MAX_ALIGN_FRAMES:
                kept.append(log_probs)
            else:
                kept.clear()
            if beam is not None:
                beam.step(log_probs)
            else:
                paths.append(GreedyPath.of(log_probs))
        log_probs = torch.cat(kept) if kept else None  # word times as the one-pass path gives them
        if beam is not None:
            finish(index, item, stream.seconds, beam.end(), frames, log_probs=log_probs)
        else:
            path = GreedyPath.cat(paths)
            finish(index, item, stream.seconds, path.tokens(), frames, log_probs=log_probs, path=path)

    def streams_window_by_window(stream: StreamingAudio) -> bool:
        return streamable and stream.seconds > stream_seconds and stream.num_samples >= min_samples

    def run_pool() -> None:
        pool.sort(key=lambda loaded: loaded.wave.numel())
        for b in range(0, len(pool), batch_size):
            batch = pool[b : b + batch_size]
            try:
                outputs = inference.logits([loaded.wave for loaded in batch])
            except MemoryError:
                for loaded in batch:  # reported like an unreadable input; the others go on
                    result.failures.append(Failure(loaded.item.utt_id, f"out of memory in the encoder "
                                                   f"({loaded.seconds:.0f} s of audio); try --chunk-seconds 600"))
                continue
            for loaded, logits in zip(batch, outputs):
                finish_logits(loaded, logits)
        pool.clear()

    started = time.perf_counter()
    for index, item in enumerate(tqdm(items, desc="transcribe", unit="file", disable=not progress)):
        if index % TRIM_EVERY == TRIM_EVERY - 1:
            release_free_memory()  # the heap of many differently sized inputs would otherwise only grow
        streamed = False
        try:
            if item.source.is_pipe:  # a pipe cannot seek: read whole
                wave = load_audio(item.source, sample_rate, allow_pipes=allow_pipes, pipe_timeout=pipe_timeout)
            else:  # one open per file: its header decides, then the same handle reads it
                with StreamingAudio(item.source, sample_rate) as stream:
                    streamed = streams_window_by_window(stream)
                    if streamed:
                        finish_stream(index, item, stream)
                    else:
                        wave = stream.read(0, stream.num_samples)
        except AudioError as error:
            result.failures.append(Failure(item.utt_id, str(error)))
            continue
        except MemoryError:
            result.failures.append(Failure(item.utt_id, "out of memory while reading the audio"
                                           + (" or streaming it through the model" if streamed else "")))
            continue
        seconds = stream.seconds if streamed else wave.numel() / sample_rate
        result.audio_seconds += seconds
        if item.reference is not None:
            result.references[item.utt_id] = vocab.normalize(item.reference)
        if streamed:
            continue
        if wave.numel() < min_samples or float(wave.abs().max()) == 0.0:
            kind = "empty" if wave.numel() < min_samples else "silent"
            result.warnings.append(f"{item.utt_id}: {kind} audio, empty transcript")
            finished.append((index, Transcript(item.utt_id, str(item.source), "", seconds)))
            continue
        if model.config.normalize_waveform:
            wave = normalize_waveform(wave)
        loaded = _Loaded(index, item, wave.to(device), seconds)
        if chunk_seconds and seconds > chunk_seconds:
            chunk = int(chunk_seconds * sample_rate)
            finish_logits(loaded, inference.chunked_logits(wave, chunk, overlap=chunk // 6))
        elif seconds > ALONE_SECONDS or batch_size == 1:
            finish_logits(loaded, inference.logits([wave])[0])
        else:
            pool.append(loaded)
            if len(pool) >= pool_size:
                run_pool()
    run_pool()
    result.transcripts = [transcript for _, transcript in sorted(finished, key=lambda pair: pair[0])]
    result.wall_seconds = time.perf_counter() - started
    return result


def kaldi_scores(refs: list[str], hyps: list[str]) -> tuple[str, str, object]:
    """Kaldi-style ``%WER`` and ``%CER`` lines over all pairs, and jiwer's word alignment."""
    import jiwer

    def line(name, out):
        errors = out.substitutions + out.deletions + out.insertions
        total = out.substitutions + out.deletions + out.hits
        rate = 100.0 * errors / max(total, 1)
        return (f"%{name} {rate:.2f} [ {errors} / {total}, {out.insertions} ins, {out.deletions} del, "
                f"{out.substitutions} sub ]")

    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return line("WER", words), line("CER", chars), words


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
