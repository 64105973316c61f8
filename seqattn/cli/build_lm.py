"""``seqattn build-lm``: KenLM n-gram LM and lexicon for beam search."""
from __future__ import annotations

import sys
from pathlib import Path


def _build_lm(args) -> int:

    from seqattn.data.vocabulary import load_vocabulary
    from seqattn.train.ngram import build_lm, normalized_corpus, write_lexicon

    vocab = load_vocabulary(args.vocab)
    texts = []
    for name in args.text:
        path = Path(name)
        if not path.is_file():
            print(f"seqattn build-lm: error: {path} does not exist", file=sys.stderr)
            return 2
        for line in path.read_text(encoding="utf-8").splitlines():
            if args.kaldi_text:  # "<utt-id> <transcript>"
                line = line.split(maxsplit=1)[1] if len(line.split(maxsplit=1)) == 2 else ""
            texts.append(line)
    if vocab.common_script and not args.language:
        print("seqattn build-lm: error: this vocabulary uses the common Indic label set: give --language",
              file=sys.stderr)
        return 2
    sentences = normalized_corpus(texts, vocab, args.language)
    if not sentences:
        print("seqattn build-lm: error: no sentence of the text can be spelled with the vocabulary", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    model = build_lm(sentences, out, order=args.order)
    words = write_lexicon(sentences, vocab, out / "lexicon.txt", language=args.language)
    print(f"{len(sentences)} of {len(texts)} sentences, {words} lexicon words: {model} and {out / 'lexicon.txt'}")
    return 0


def _add_build_lm_parser(commands) -> None:
    p = commands.add_parser(
        "build-lm",
        help="KenLM n-gram LM + lexicon for beam search",
        description="Train an n-gram LM with KenLM's lmplz/build_binary (tools/install_kenlm.sh) on transcripts "
        "and write the lexicon (word, its characters, |) of the words the CTC vocabulary can spell. "
        "Sentences are cut at words with characters outside the vocabulary.",
        epilog="example: seqattn build-lm data/train_hi/text --kaldi-text --vocab exp/ft/best/tokens.json "
        "--out-dir exp/lm/hi",
    )
    p.add_argument("text", nargs="+", help="text files: one sentence per line, or Kaldi text with --kaldi-text")
    p.add_argument("--kaldi-text", action="store_true", help="lines start with an utterance id")
    p.add_argument("--vocab", required=True, help="the model's tokens.json")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--language", help="the text's language (needed for common-label-set vocabularies)")
    p.set_defaults(handler=_build_lm)


def add_build_lm_parser(commands) -> None:
    _add_build_lm_parser(commands)
