"""Which layers separate languages and language families?

Each utterance becomes one vector per layer: the mean over its frames of that layer's output (layer 0 is
the transformer input, i.e. the projected CNN features; layer i >= 1 is transformer layer i's output). A
linear probe (standardised features, multinomial logistic regression) is scored by stratified k-fold
cross-validation per layer, for language id and for language family. The best layer for language id
is also drawn in two dimensions (PCA, or t-SNE).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from seqattn.models.wav2vec2.longform import inference_features

from .attention import backbone_of
from .families import family_of
from .inputs import AnalysisInputError, Utterance


@torch.no_grad()
def pooled_layer_features(model: torch.nn.Module, utterances: list[Utterance], batch_size: int = 4,
                          progress: bool = True) -> np.ndarray:
    """(utterances, layers + 1, C) mean-pooled representations."""
    backbone = backbone_of(model)
    rows = []
    for start in tqdm(range(0, len(utterances), batch_size), desc="layers", unit="batch", disable=not progress):
        batch = utterances[start : start + batch_size]
        features = inference_features(backbone, [u.wave for u in batch])
        projected = backbone.feature_projection(features.x)  # (B, T, C) the transformer's input
        outputs = backbone.encode(features).layer_outputs  # per-layer (B, T, C)
        valid = torch.ones(projected.shape[:2], device=projected.device) if features.padding_mask is None \
            else (~features.padding_mask).float()  # (B, T)
        stacked = torch.stack([projected] + list(outputs), dim=1)  # (B, L+1, T, C)
        pooled = (stacked * valid[:, None, :, None]).sum(2) / valid.sum(1)[:, None, None]  # (B, L+1, C)
        rows.append(pooled.double().cpu().numpy())
    return np.concatenate(rows, axis=0)


def probe_accuracy(features: np.ndarray, labels: list[str], folds: int, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of stratified k-fold accuracy of a linear probe on (N, C) features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(probe, features, np.asarray(labels), cv=splitter)
    return float(scores.mean()), float(scores.std())


def check_classes(labels: list[str], folds: int, what: str) -> None:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    if len(counts) < 2:
        raise AnalysisInputError(f"a {what} probe needs at least 2 classes; the inputs have only {sorted(counts)}")
    small = {k: v for k, v in counts.items() if v < folds}
    if small:
        raise AnalysisInputError(
            f"too few utterances per class for a {folds}-fold {what} probe: "
            + ", ".join(f"{k} has {v}" for k, v in sorted(small.items()))
            + f"; give at least {folds} utterances of each (or lower --folds, minimum 2)"
        )


@dataclass
class LayerAnalysis:
    languages: list[str]  # per utterance
    families: list[str | None]
    language_accuracy: list[tuple[float, float]]  # per layer: (mean, std)
    family_accuracy: list[tuple[float, float]] | None
    folds: int
    best_layer: int
    projection: np.ndarray  # (N, 2) of the best layer
    projection_method: str
    chance: dict[str, float] = field(default_factory=dict)  # majority-class accuracy per probe
    skipped_family: list[str] = field(default_factory=list)  # languages without a known family

    def to_json(self) -> dict:
        return {
            "utterances": len(self.languages),
            "folds": self.folds,
            "layers": [
                {"layer": i, "language_accuracy": round(m, 4), "language_accuracy_std": round(s, 4),
                 **({"family_accuracy": round(self.family_accuracy[i][0], 4),
                     "family_accuracy_std": round(self.family_accuracy[i][1], 4)} if self.family_accuracy else {})}
                for i, (m, s) in enumerate(self.language_accuracy)
            ],
            "best_layer_language": self.best_layer,
            "best_layer_family": None if not self.family_accuracy else
            int(np.argmax([m for m, _ in self.family_accuracy])),
            "chance": self.chance,
            "languages": sorted(set(self.languages)),
            "families": {lang: fam for lang, fam in sorted(set(zip(self.languages, self.families)))},
            "skipped_for_family": self.skipped_family,
            "projection_method": self.projection_method,
        }


def majority_share(labels: list[str]) -> float:
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())


def analyze_layers(features: np.ndarray, languages: list[str], *, folds: int = 5, projection: str = "pca",
                   families: dict[str, str] | None = None, seed: int = 0) -> LayerAnalysis:
    """Probe every layer of (N, L+1, C) pooled features for language and family."""
    check_classes(languages, folds, "language-id")
    fams = [family_of(lang, families) for lang in languages]
    known = [i for i, f in enumerate(fams) if f is not None]
    skipped = sorted({lang for lang, f in zip(languages, fams) if f is None})
    family_labels = [fams[i] for i in known]
    try:
        check_classes(family_labels, folds, "language-family")
        do_family = True
    except AnalysisInputError:
        if len(set(family_labels)) >= 2:
            raise
        do_family = False  # one family only (or none known): the family probe has nothing to separate
    language_accuracy, family_accuracy = [], [] if do_family else None
    for layer in range(features.shape[1]):
        language_accuracy.append(probe_accuracy(features[:, layer], languages, folds, seed))
        if do_family:
            family_accuracy.append(probe_accuracy(features[known, layer], family_labels, folds, seed))
    best = int(np.argmax([m for m, _ in language_accuracy]))
    points = project_2d(features[:, best], projection, seed)
    chance = {"language": majority_share(languages)}
    if do_family:
        chance["family"] = majority_share(family_labels)
    return LayerAnalysis(list(languages), fams, language_accuracy, family_accuracy, folds, best, points, projection,
                         chance, skipped)


def project_2d(x: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(x)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = max(2.0, min(30.0, (x.shape[0] - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    raise ValueError(f"projection must be 'pca' or 'tsne', got {method!r}")


def write_layer_outputs(analysis: LayerAnalysis, out_dir: str | Path, formats=("png",),
                        extra: dict | None = None) -> dict:
    import json

    from . import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    values = {**(extra or {}), **analysis.to_json()}
    (out_dir / "layers.json").write_text(json.dumps(values, indent=1) + "\n")
    with open(out_dir / "layers.csv", "w") as handle:
        handle.write("layer,language_accuracy,language_std,family_accuracy,family_std\n")
        for row in values["layers"]:
            handle.write(f"{row['layer']},{row['language_accuracy']},{row['language_accuracy_std']},"
                         f"{row.get('family_accuracy', '')},{row.get('family_accuracy_std', '')}\n")
    layers = list(range(len(analysis.language_accuracy)))
    series = {"language id": [m for m, _ in analysis.language_accuracy]}
    if analysis.family_accuracy:
        series["language family"] = [m for m, _ in analysis.family_accuracy]
    reference = {f"chance ({k})": v for k, v in analysis.chance.items()}
    plots.lines(layers, series, "layer (0 = transformer input)", f"{analysis.folds}-fold probe accuracy",
                "linear-probe accuracy per layer", out_dir, "layer_probes", formats, ylim=(0, 1.02),
                reference=reference)
    groups = [f or "unknown" for f in analysis.families]
    plots.scatter_2d(
        analysis.projection,
        analysis.languages,
        groups,
        f"layer {analysis.best_layer} ({analysis.projection_method.upper()})",
        out_dir,
        "layer_projection",
        formats,
    )
    return values
