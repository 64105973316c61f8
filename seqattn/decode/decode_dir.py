"""A decoding run's output directory, laid out as Kaldi/ESPnet/icefall users read one.

- ``<utt>.<fmt>`` per input (txt, json, ctm, srt, vtt);
- ``text``: the hypotheses as a Kaldi text file, sorted by utterance id;
- with references: ``wer`` (Kaldi's ``%WER``/``%CER`` lines over all of them), ``per_utt`` (each reference and
  hypothesis, then jiwer's alignment) and, where languages are known, ``wer_per_language``;
- ``failed.txt``: every input that could not be transcribed, with its reason.
"""
from __future__ import annotations

from pathlib import Path

from .transcribe import TranscriptionResult, kaldi_score_lines, scores_per_language
from .writers import WRITERS


def write_decode_dir(result: TranscriptionResult, out: Path, formats) -> tuple[str, str]:
    """Write ``out`` for ``result``; returns the ``%WER`` and ``%CER`` lines ("" without references)."""
    out.mkdir(parents=True, exist_ok=True)
    for transcript in result.transcripts:
        for fmt in formats:
            (out / f"{transcript.utt_id}.{fmt}").write_text(WRITERS[fmt](transcript), encoding="utf-8")
    hypotheses = sorted((t.utt_id, t.text) for t in result.transcripts)
    (out / "text").write_text("".join(f"{utt} {text}\n" for utt, text in hypotheses), encoding="utf-8")
    wer, cer, alignments = kaldi_score_lines(result)
    if wer:
        (out / "wer").write_text(f"{wer}\n{cer}\n")
        (out / "per_utt").write_text("\n".join(alignments) + "\n", encoding="utf-8")
        per_language = scores_per_language(result)
        if per_language:
            (out / "wer_per_language").write_text("\n".join(per_language) + "\n", encoding="utf-8")
    if result.failures:
        (out / "failed.txt").write_text("".join(f"{f.name}\t{f.reason}\n" for f in result.failures), encoding="utf-8")
    return wer, cer
