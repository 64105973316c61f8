#!/usr/bin/env python
"""LM decoding of dev, test and (where the recipe made it) test_ood per language, with the LM weight and word
score tuned on dev.

Run: python local/decode_lm.py --model exp/ft/best --data data --lm-dir exp/lm --langs hi,ta --out exp/decode/ft/lm

For each language the acoustic model runs once over dev; every (lm_weight, word_score) pair of the grid is
decoded from those cached log-probabilities with the language's KenLM and lexicon and scored (CER, then WER).
The best pair is written to OUT/chosen.txt and dev and test are decoded with it by `seqattn transcribe`, so
their wer files are the CLI's own.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import jiwer
import torch

from seqattn.data.audio import load_audio, normalize_waveform
from seqattn.decode.transcribe import Beam, collect_inputs, load_recognizer, strip_boundaries
from seqattn.models.wav2vec2.longform import LongFormCTC

LM_WEIGHTS = (0.5, 1.0, 2.0)
WORD_SCORES = (-1.0, 0.0, 1.0)


def dev_log_probs(model, items):
    """Log-probabilities (T, V) of every dev utterance, computed once."""
    waves = []
    for item in items:
        wave = load_audio(item.source, 16000)
        waves.append(normalize_waveform(wave) if model.config.normalize_waveform else wave)
    inference, result = LongFormCTC(model), []
    for start in range(0, len(waves), 8):
        result += [torch.log_softmax(row.float(), -1) for row in inference.logits(waves[start : start + 8])]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--lm-dir", required=True)
    parser.add_argument("--langs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--beam-size", type=int, default=50)
    args = parser.parse_args()

    model, vocab = load_recognizer(args.model)
    boundary = vocab.index["|"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen_lines = []
    for lang in args.langs.split(","):
        lm_dir = Path(args.lm_dir) / lang
        lm, lexicon = next(lm_dir.glob("lm.*gram.bin"), None), lm_dir / "lexicon.txt"
        if lm is None or not lexicon.is_file():
            print(f"{lang}: no LM in {lm_dir}, skipped", file=sys.stderr)
            continue
        items, _ = collect_inputs([], data_dir=f"{args.data}/dev_{lang}")
        refs = [vocab.normalize(item.reference or "") for item in items]
        log_probs = dev_log_probs(model, items)
        best = None
        for weight in LM_WEIGHTS:
            for word_score in WORD_SCORES:
                beam = Beam(vocab, args.beam_size, str(lm), str(lexicon), weight, word_score)
                hyps = [vocab.decode(strip_boundaries(beam(lp), boundary), lang) for lp in log_probs]
                score = (jiwer.cer(refs, hyps), jiwer.wer(refs, hyps))
                print(f"{lang} dev lm_weight={weight} word_score={word_score}: cer={100 * score[0]:.2f} "
                      f"wer={100 * score[1]:.2f}", file=sys.stderr)
                if best is None or score < best[0]:
                    best = (score, weight, word_score)
        _, weight, word_score = best
        chosen_lines.append(f"{lang}: lm_weight={weight} word_score={word_score} beam={args.beam_size}")
        # every set in one call: each is written to OUT/<set>
        sets = [f"{args.data}/{split}_{lang}" for split in ("dev", "test", "test_ood")]
        sets = [arg for path in sets if Path(path).is_dir() for arg in ("--data-dir", path)]
        subprocess.run(["seqattn", "transcribe", args.model, *sets, "--output-dir", str(out), "--lm", str(lm),
                        "--lexicon", str(lexicon), "--lm-weight", str(weight), "--word-score", str(word_score),
                        "--beam-size", str(args.beam_size), "--batch-size", "8", "--quiet"], check=True)
    (out / "chosen.txt").write_text("; ".join(chosen_lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
