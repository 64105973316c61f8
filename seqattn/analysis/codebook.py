"""Which quantizer entries each language uses, and how much languages share them.

For a pretrained wav2vec2 model (Gumbel product quantizer: G groups of V entries; or BEST-RQ's frozen
random-projection quantizer: G codebooks of V entries), every frame of every utterance picks one entry per
group (the eval-mode argmax, as the pretraining targets do). Per language
that gives a (G, V) count table, from which:

- per language: the distribution of entry use per group, its perplexity ``exp(H)`` per group (their sum
  is fairseq's ``code_perplexity``) and the number of entries used;
- between languages: the Jensen-Shannon divergence (base 2, so in [0, 1]) averaged over groups, the
  Jaccard overlap of the top-k entries, the entries every language uses against those only one uses, and
  an average-linkage clustering of the languages by divergence.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from seqattn.models.wav2vec2.longform import inference_features

from .attention import backbone_of
from .inputs import AnalysisInputError, Utterance


def require_quantizer(model: torch.nn.Module, model_dir: str = "the model") -> None:
    if getattr(model, "quantizer", None) is None:
        raise AnalysisInputError(
            f"codebook analysis needs a pretrained wav2vec2 model with its quantizer (model_type "
            f"wav2vec2_pretraining); {model_dir} is a {type(model).__name__}, which has none (fine-tuning and "
            f"export drop it). Pass the pretraining model directory instead."
        )


def require_languages(utterances: list[Utterance], minimum: int, what: str) -> dict[str, int]:
    """Utterance count per language; a clear error when languages are missing or too few."""
    missing = [u.utt_id for u in utterances if not u.language]
    if missing:
        raise AnalysisInputError(
            f"{what} needs the language of every utterance, but {len(missing)} have none (e.g. {missing[0]}): give "
            f"data dirs with an utt2lang file, manifests with a 'language' field, or write LANG=PATH"
        )
    counts: dict[str, int] = {}
    for u in utterances:
        counts[u.language] = counts.get(u.language, 0) + 1
    if len(counts) < minimum:
        raise AnalysisInputError(f"{what} needs at least {minimum} languages; the inputs have {sorted(counts)}")
    return counts


@torch.no_grad()
def code_counts(model: torch.nn.Module, utterances: list[Utterance], batch_size: int = 4,
                progress: bool = True) -> dict[str, np.ndarray]:
    """language -> (G, V) int64 count of frames that picked each entry."""
    require_quantizer(model)
    backbone, quantizer = backbone_of(model), model.quantizer
    groups, entries = quantizer.groups, quantizer.num_vars
    counts: dict[str, np.ndarray] = {}
    for start in tqdm(range(0, len(utterances), batch_size), desc="codebook", unit="batch", disable=not progress):
        batch = utterances[start : start + batch_size]
        features = inference_features(backbone, [u.wave for u in batch], keep_raw=True)
        frames = torch.ones(features.x.shape[:2], dtype=torch.bool, device=features.x.device) \
            if features.padding_mask is None \
            else ~features.padding_mask  # (B, T)
        targets = quantizer(model.quantizer_input(features), frames).targets  # (B, T, G)
        for row, utterance in enumerate(batch):
            picked = targets[row][frames[row]]  # (T_i, G)
            offsets = picked.cpu() + torch.arange(groups) * entries  # (T_i, G) flat entry index per group
            table = torch.bincount(offsets.flatten(), minlength=groups * entries).view(groups, entries)
            counts.setdefault(utterance.language, np.zeros((groups, entries), dtype=np.int64))
            counts[utterance.language] += table.numpy()
    return counts


def perplexities(distribution: np.ndarray) -> np.ndarray:
    """(G,) exp(entropy) of each group's distribution (G, V)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(distribution > 0, distribution * np.log(distribution), 0.0).sum(-1)
    return np.exp(entropy)


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """JSD in bits between two (G, V) distributions, averaged over groups."""
    m = (p + q) / 2

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(a / b), 0.0).sum(-1)

    return float(np.mean(0.5 * kl(p, m) + 0.5 * kl(q, m)))


def top_entries(distribution: np.ndarray, k: int) -> set[tuple[int, int]]:
    """The k most used entries of each group, as (group, entry) pairs (only entries used at all)."""
    chosen = set()
    for group, row in enumerate(distribution):
        order = np.argsort(-row, kind="stable")[:k]
        chosen.update((group, int(v)) for v in order if row[v] > 0)
    return chosen


@dataclass
class CodebookAnalysis:
    languages: list[str]
    counts: dict[str, np.ndarray]  # language -> (G, V)
    jsd: np.ndarray  # (L, L)
    jaccard: np.ndarray  # (L, L) top-k overlap
    top_k: int
    min_share: float
    shared: list[tuple[int, int]]  # entries every language uses
    specific: dict[str, list[tuple[int, int]]]  # entries only that language uses
    linkage: np.ndarray | None  # scipy linkage matrix over languages
    utterances: dict[str, int] = field(default_factory=dict)

    def distribution(self, language: str) -> np.ndarray:
        table = self.counts[language].astype(np.float64)
        return table / np.maximum(table.sum(-1, keepdims=True), 1)

    def to_json(self) -> dict:
        per_language = {}
        for language in self.languages:
            dist = self.distribution(language)
            ppl = perplexities(dist)
            per_language[language] = {
                "utterances": self.utterances.get(language, 0),
                "frames": int(self.counts[language][0].sum()),
                "perplexity_per_group": [round(float(p), 3) for p in ppl],
                "code_perplexity": round(float(ppl.sum()), 3),
                "entries_used": int((self.counts[language] > 0).sum()),
                "counts": self.counts[language].tolist(),
            }
        groups, entries = next(iter(self.counts.values())).shape
        return {
            "groups": groups,
            "entries_per_group": entries,
            "languages": self.languages,
            "per_language": per_language,
            "jensen_shannon_bits": np.round(self.jsd, 5).tolist(),
            "top_k": self.top_k,
            "top_k_jaccard": np.round(self.jaccard, 5).tolist(),
            "min_share": self.min_share,
            "shared_by_all": {"count": len(self.shared), "entries": [f"{g}:{v}" for g, v in self.shared]},
            "specific_to_one": {lang: {"count": len(e), "entries": [f"{g}:{v}" for g, v in e]}
                                for lang, e in self.specific.items()},
            "linkage": None if self.linkage is None else np.round(self.linkage, 6).tolist(),
        }


def compare_languages(counts: dict[str, np.ndarray], *, top_k: int = 32, min_share: float = 0.002,
                      utterances: dict[str, int] | None = None) -> CodebookAnalysis:
    """Between-language statistics from per-language count tables.

    An entry is "used" by a language when it takes at least ``min_share`` of that language's frames in its
    group (so that one stray frame does not make an entry shared).
    """
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    languages = sorted(counts)
    dists = {}
    for lang in languages:
        table = counts[lang].astype(np.float64)
        dists[lang] = table / np.maximum(table.sum(-1, keepdims=True), 1)
    n = len(languages)
    jsd, jaccard = np.zeros((n, n)), np.ones((n, n))
    tops = {lang: top_entries(dists[lang], top_k) for lang in languages}
    for i in range(n):
        for j in range(i + 1, n):
            a, b = languages[i], languages[j]
            jsd[i, j] = jsd[j, i] = jensen_shannon(dists[a], dists[b])
            union = tops[a] | tops[b]
            jaccard[i, j] = jaccard[j, i] = len(tops[a] & tops[b]) / len(union) if union else 1.0
    used = {lang: set(map(tuple, np.argwhere(dists[lang] >= min_share).tolist())) for lang in languages}
    shared = sorted(set.intersection(*used.values())) if used else []
    specific = {}
    for lang in languages:
        others = set().union(*(used[o] for o in languages if o != lang))
        specific[lang] = sorted(used[lang] - others)
    tree = linkage(squareform(jsd, checks=False), method="average") if n >= 2 else None
    return CodebookAnalysis(languages, counts, jsd, jaccard, top_k, min_share,
                            [(int(g), int(v)) for g, v in shared],
                            {k: [(int(g), int(v)) for g, v in e] for k, e in specific.items()}, tree,
                            dict(utterances or {}))


def write_codebook_outputs(analysis: CodebookAnalysis, out_dir: str | Path, formats=("png",),
                           extra: dict | None = None) -> dict:
    import json

    from . import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    values = {**(extra or {}), **analysis.to_json()}
    (out_dir / "codebook.json").write_text(json.dumps(values) + "\n")
    with open(out_dir / "codebook_languages.csv", "w") as handle:
        handle.write("language,utterances,frames,code_perplexity,entries_used,specific_entries\n")
        for lang in analysis.languages:
            row = values["per_language"][lang]
            handle.write(f"{lang},{row['utterances']},{row['frames']},{row['code_perplexity']},{row['entries_used']},"
                         f"{len(analysis.specific[lang])}\n")
    langs = analysis.languages
    plots.heatmap(analysis.jsd, "Jensen-Shannon divergence of code use (bits)", "JSD", out_dir, "codebook_jsd",
                  formats, row_label="language", col_label="language", row_names=langs, col_names=langs)
    plots.heatmap(analysis.jaccard, f"Jaccard overlap of the top-{analysis.top_k} entries per group", "Jaccard",
                  out_dir, "codebook_jaccard", formats, row_label="language", col_label="language", row_names=langs,
                  col_names=langs)
    if analysis.linkage is not None:
        plots.dendrogram(analysis.linkage, langs, "languages clustered by code use (average linkage)", out_dir,
                         "codebook_dendrogram", formats)
    return values
