"""Matplotlib figures of the analyses (headless backend; each function writes one figure per format)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def save(fig, out_dir: Path, name: str, formats: tuple[str, ...]) -> list[Path]:
    paths = []
    for fmt in formats:
        path = Path(out_dir) / f"{name}.{fmt}"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def heatmap(matrix: np.ndarray, title: str, colorbar_label: str, out_dir: Path, name: str, formats,
            row_label: str = "layer", col_label: str = "head", row_names=None, col_names=None,
            annotate: bool = True) -> list[Path]:
    rows, cols = matrix.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * cols + 2), max(3.0, 0.45 * rows + 1.5)))
    image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap="viridis")
    fig.colorbar(image, ax=ax, label=colorbar_label)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    ax.set_xticks(range(cols), col_names if col_names is not None else range(cols))
    ax.set_yticks(range(rows), row_names if row_names is not None else range(rows))
    if annotate and rows * cols <= 400:
        finite = matrix[np.isfinite(matrix)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0
        for r in range(rows):
            for c in range(cols):
                if np.isfinite(matrix[r, c]):
                    value = matrix[r, c]
                    text = f"{value:.0f}" if abs(value) >= 10 else f"{value:.2f}"
                    ax.text(c, r, text, ha="center", va="center", fontsize=7,
                            color="black" if value > middle else "white")
    ax.set_title(title)
    return save(fig, out_dir, name, formats)


def mass_curves(windows, curves: np.ndarray, unit: str, out_dir: Path, formats) -> list[Path]:
    """Mass inside +-w against w, one line per layer."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = plt.cm.viridis(np.linspace(0, 1, curves.shape[0]))
    for layer, curve in enumerate(curves):
        ax.plot(windows, curve, marker="o", markersize=3, color=colors[layer], label=f"layer {layer}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"window +-w ({unit})")
    ax.set_ylabel("attention mass inside +-w")
    ax.set_ylim(0, 1.02)
    ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("attention mass versus window (mean over heads)")
    return save(fig, out_dir, "mass_vs_window", formats)


def attention_maps(maps: dict, titles: dict, out_dir: Path, formats, utterance: str | None) -> list[Path]:
    """A grid of example attention maps (query rows, key columns)."""
    keys = list(maps)
    cols = min(4, len(keys))
    rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.3 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        ax.axis("on")
        ax.imshow(maps[key], cmap="magma", aspect="equal", interpolation="nearest")
        ax.set_title(titles[key], fontsize=8)
        ax.set_xlabel("key frame", fontsize=7)
        ax.set_ylabel("query frame", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"example attention maps{f' ({utterance})' if utterance else ''}", fontsize=9)
    return save(fig, out_dir, "attention_maps", formats)


def lines(x, series: dict, xlabel: str, ylabel: str, title: str, out_dir: Path, name: str, formats,
          ylim=None, reference: dict | None = None) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for label, values in series.items():
        ax.plot(x, values, marker="o", markersize=3, label=label)
    for label, value in (reference or {}).items():
        ax.axhline(value, linestyle=":", color="grey", linewidth=1)
        ax.text(x[0], value, f" {label}", fontsize=7, va="bottom", color="grey")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return save(fig, out_dir, name, formats)


def scatter_2d(points: np.ndarray, labels: list[str], groups: list[str] | None, title: str, out_dir: Path,
               name: str, formats) -> list[Path]:
    """2-D projection: colour by label (language), marker by group (family)."""
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    names = sorted(set(labels))
    colors = plt.cm.tab20(np.linspace(0, 1, max(len(names), 2)))
    markers = {g: m for g, m in zip(sorted(set(groups or [""])), "osD^v<>ph*")}
    for color, label in zip(colors, names):
        for group, marker in markers.items():
            idx = [i for i, lab in enumerate(labels) if lab == label and (groups is None or groups[i] == group)]
            if idx:
                legend = label if groups is None else f"{label} ({group})"
                ax.scatter(points[idx, 0], points[idx, 1], s=18, color=color, marker=marker, label=legend, alpha=0.8)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return save(fig, out_dir, name, formats)


def dendrogram(linkage: np.ndarray, labels: list[str], title: str, out_dir: Path, name: str, formats) -> list[Path]:
    from scipy.cluster.hierarchy import dendrogram as draw

    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) + 2), 3.8))
    draw(linkage, labels=labels, ax=ax, color_threshold=0)
    ax.set_ylabel("Jensen-Shannon divergence (bits)")
    ax.set_title(title)
    return save(fig, out_dir, name, formats)
