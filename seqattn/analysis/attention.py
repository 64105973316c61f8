"""How local is each attention head? Per layer and head, over a sample of utterances:

- mean attention distance ``sum_j w_ij |i - j|`` (frames and ms);
- attention mass within +-w for w in ``windows``;
- w90 / w95: the smallest w whose +-w band holds 90% / 95% of the head's mass;
- entropy ``-sum_j w_ij log w_ij`` (nats);
- self mass ``w_ii``.

Every statistic is an average over queries: each real (non-padding) query of each utterance counts once.
A routed query that joined several clusters has its rows merged into one distribution; a query that
joined none (balanced clusters leave some out) is not counted. The band statistics come from
one histogram per head of mass by distance |i - j|, summed over rows: its cumulative sum is the mass
within +-w for every w at once, so w90/w95 are exact integers rather than grid points.

Weights come from the kernels' own :class:`~seqattn.nn.AttentionWeights`: banded for local heads (memory
O(N * window)), explicit key lists for routed heads, and the dense eager path for full heads (the fast
SDPA path never forms weights, so analysis is the only time a full model pays N x N memory). They are
consumed layer by layer through forward hooks, so at most one layer's weights exist at a time.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from seqattn.models.wav2vec2.longform import inference_features
from seqattn.nn import AttentionWeights, MultiHeadAttention
from seqattn.utils.device import module_device

DEFAULT_WINDOWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
COVERAGES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)  # stored per head, for `convert localize`


def backbone_of(model: torch.nn.Module) -> torch.nn.Module:
    """The :class:`Wav2Vec2Model` inside any wav2vec2 model class."""
    return getattr(model, "wav2vec2", model)


def frame_milliseconds(model: torch.nn.Module, sample_rate: int = 16000) -> float:
    """Duration of one encoder frame: the CNN's total stride over the sample rate."""
    return 1000.0 * backbone_of(model).feature_extractor.receptive_field()[1] / sample_rate


@dataclass
class HeadStats:
    layer: int
    head: int
    kind: str  # kernel that ran the head: full, local, routing, window, pooled
    rows: int  # query rows averaged over
    mean_distance_frames: float
    mean_distance_ms: float | None  # None for token models
    w90: int  # frames
    w95: int
    entropy: float  # nats
    self_mass: float
    mass_within: dict[int, float] = field(default_factory=dict)  # w -> mass inside +-w
    coverage_windows: dict[float, int] = field(default_factory=dict)  # coverage -> smallest +-w holding it


class HeadStatistics:
    """Accumulates, per layer and head, the mass-by-distance histogram, the entropy and the row count."""

    def __init__(self, num_layers: int, num_heads: list[int]):
        self.hist = [np.zeros((heads, 1)) for heads in num_heads]  # (H, D): grows with the longest distance seen
        self.entropy = [np.zeros(heads) for heads in num_heads]
        self.rows = [np.zeros(heads, dtype=np.int64) for heads in num_heads]
        self.kinds = [["?"] * heads for heads in num_heads]
        self.num_layers = num_layers

    def add(self, layer: int, weights: AttentionWeights, query_valid: torch.Tensor | None) -> None:
        """Fold one head group's weights (B, h, M, K) into the layer's statistics. ``query_valid`` (B, N) marks
        real (non-padding) queries."""
        probs = weights.weights.detach().double()  # (B, h, M, K)
        keys = weights.key_positions()  # (B, h, M, K), -1 where the slot holds no key
        queries = weights.query_positions()  # (B, h, M)
        for slot, head in enumerate(weights.heads):
            w, k, q = probs[:, slot], keys[:, slot], queries[:, slot]  # (B, M, K), (B, M, K), (B, M)
            present = (k >= 0) & (w > 0)
            rows = present.any(-1)  # (B, M): rows that attended something
            if query_valid is not None:
                rows &= torch.gather(query_valid, 1, q.clamp(min=0))
            take = present & rows[..., None]  # (B, M, K)
            if not bool(take.any()):
                continue
            if weights.query_index is None:  # row m is query m: each row is one query's distribution
                distance, mass = (k - q[..., None]).abs()[take], w[take]  # (S,), (S,)
                count = int(rows.sum())
            else:  # routed rows: a query may own several rows (one per cluster it joined)
                distance, mass, count = merge_rows_by_query(w, k, q, take)
            self._accumulate(layer, head, distance, mass, count, weights.kind)

    def _accumulate(self, layer, head, distance, mass, count, kind) -> None:
        counts = torch.bincount(distance, weights=mass).cpu().numpy()  # (D_max + 1,)
        hist = self.hist[layer]
        if counts.shape[0] > hist.shape[1]:
            hist = np.pad(hist, ((0, 0), (0, counts.shape[0] - hist.shape[1])))
            self.hist[layer] = hist
        hist[head, : counts.shape[0]] += counts
        self.entropy[layer][head] += float(-torch.xlogy(mass, mass).sum())
        self.rows[layer][head] += count
        self.kinds[layer][head] = kind

    def results(self, frame_ms: float | None, windows=DEFAULT_WINDOWS, coverages=COVERAGES) -> list[HeadStats]:
        stats = []
        for layer in range(self.num_layers):
            hist, rows = self.hist[layer], self.rows[layer]
            for head in range(hist.shape[0]):
                n = int(rows[head])
                if n == 0:
                    continue
                mass = hist[head] / n  # (D,) average mass at each distance
                cumulative = np.cumsum(mass)
                mean_distance = float((np.arange(mass.shape[0]) * mass).sum())
                cover = {q: smallest_window(cumulative, q) for q in sorted({*coverages, 0.9, 0.95})}
                stats.append(HeadStats(
                    layer=layer, head=head, kind=self.kinds[layer][head], rows=n,
                    mean_distance_frames=mean_distance,
                    mean_distance_ms=None if frame_ms is None else mean_distance * frame_ms,
                    w90=cover[0.9], w95=cover[0.95], entropy=float(self.entropy[layer][head] / n),
                    self_mass=float(mass[0]),
                    mass_within={w: float(cumulative[min(w, cumulative.shape[0] - 1)]) for w in windows},
                    coverage_windows=cover,
                ))
        return stats


def merge_rows_by_query(w, k, q, take):
    """Routed heads: sum the weights a query gives each key over all its rows, and normalise each query's
    total to 1 (the kernel averages a query's clusters). w, k: (B, M, K); q: (B, M); take: (B, M, K) bool.
    Returns (distance (S,), mass (S,), number of queries) over the distinct (query, key) pairs."""
    span = int(max(int(k.max()), int(q.max()))) + 1  # positions are < span
    batch = torch.arange(w.shape[0])[:, None, None].expand_as(k)  # (B, M, K)
    query = q[..., None].expand_as(k)  # (B, M, K)
    pair = (batch * span + query) * span + k  # (B, M, K) one id per (utterance, query, key)
    ids, inverse = torch.unique(pair[take], return_inverse=True)
    mass = torch.zeros(ids.shape[0], dtype=w.dtype).scatter_add_(0, inverse, w[take])  # (S,)
    owner_ids, owner = torch.unique(ids // span, return_inverse=True)  # the (utterance, query) of each pair
    totals = torch.zeros(owner_ids.shape[0], dtype=w.dtype).scatter_add_(0, owner, mass)
    mass = mass / totals[owner]
    distance = ((ids // span) % span - ids % span).abs()
    return distance, mass, int(owner_ids.shape[0])


def smallest_window(cumulative: np.ndarray, coverage: float) -> int:
    """Smallest w with ``cumulative[w] >= coverage`` (of a total that is 1 up to rounding)."""
    reached = np.nonzero(cumulative >= coverage - 1e-9)[0]
    return int(reached[0]) if reached.size else int(cumulative.shape[0] - 1)


@dataclass
class AttentionAnalysis:
    heads: list[HeadStats]
    frame_ms: float | None  # None when positions are tokens
    windows: list[int]
    utterances: int  # utterances (or token windows) analysed
    seconds: float  # audio seconds (or tokens)
    example_maps: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (layer, head) -> (F, F)
    example_utterance: str | None = None
    unit: str = "frames"  # what a position is: frames (audio) or tokens (text)

    def head(self, layer: int, head: int) -> HeadStats:
        for stats in self.heads:
            if stats.layer == layer and stats.head == head:
                return stats
        raise KeyError((layer, head))

    @property
    def num_layers(self) -> int:
        return 1 + max(s.layer for s in self.heads)

    def matrix(self, name: str) -> np.ndarray:
        """(layers, max heads) array of one statistic, NaN where a layer has fewer heads."""
        heads = 1 + max(s.head for s in self.heads)
        out = np.full((self.num_layers, heads), np.nan)
        for s in self.heads:
            out[s.layer, s.head] = getattr(s, name)
        return out

    def layer_mass_curves(self) -> np.ndarray:
        """(layers, windows) mass within +-w averaged over each layer's heads."""
        out = np.zeros((self.num_layers, len(self.windows)))
        counts = np.zeros(self.num_layers)
        for s in self.heads:
            out[s.layer] += [s.mass_within[w] for w in self.windows]
            counts[s.layer] += 1
        return out / np.maximum(counts, 1)[:, None]

    def to_json(self) -> dict:
        return {
            "unit": self.unit,
            "frame_ms": self.frame_ms,
            "windows": list(self.windows),
            "utterances": self.utterances,
            "seconds": round(self.seconds, 3),
            "example_utterance": self.example_utterance,
            "heads": [{**asdict(s), "mass_within": {str(w): m for w, m in s.mass_within.items()},
                       "coverage_windows": {str(c): w for c, w in s.coverage_windows.items()}} for s in self.heads],
            "layers": [
                {"layer": layer, "mean_distance_frames": float(np.nanmean(self.matrix("mean_distance_frames")[layer])),
                 "max_w95": int(np.nanmax(self.matrix("w95")[layer])),
                 "mass_within": {str(w): float(m) for w, m in zip(self.windows, curve)}}
                for layer, curve in enumerate(self.layer_mass_curves())
            ],
        }

    @classmethod
    def from_json(cls, values: dict) -> AttentionAnalysis:
        heads = [HeadStats(**{**h, "mass_within": {int(w): m for w, m in h["mass_within"].items()},
                              "coverage_windows": {float(c): w for c, w in h.get("coverage_windows", {}).items()}})
                 for h in values["heads"]]
        return cls(heads, values["frame_ms"], values["windows"], values["utterances"], values["seconds"],
                   example_utterance=values.get("example_utterance"), unit=values.get("unit", "frames"))

    def write_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["layer", "head", "kind", "rows", "mean_distance_frames", "mean_distance_ms", "w90",
                             "w95", "entropy", "self_mass"] + [f"mass_within_{w}" for w in self.windows])
            for s in self.heads:
                ms = "" if s.mean_distance_ms is None else f"{s.mean_distance_ms:.2f}"
                writer.writerow(
                    [
                        s.layer,
                        s.head,
                        s.kind,
                        s.rows,
                        f"{s.mean_distance_frames:.4f}",
                        ms,
                        s.w90,
                        s.w95,
                        f"{s.entropy:.4f}",
                        f"{s.self_mass:.4f}",
                    ]
                    + [f"{s.mass_within[w]:.4f}" for w in self.windows]
                )


def attention_modules(model: torch.nn.Module) -> list[MultiHeadAttention]:
    return [layer.attention for layer in backbone_of(model).encoder.layers]


def measure_heads(modules: list[MultiHeadAttention], batches, map_frames: int = 150):
    """Statistics of every head of ``modules`` over ``batches``: an iterable of (valid (B, N) bool or None,
    a callable that runs the model on that batch with ``return_weights=True``). The first batch's first
    sequence gives the example maps (its first ``map_frames`` positions). Returns (HeadStatistics, maps)."""
    stats = HeadStatistics(len(modules), [m.num_heads for m in modules])
    maps: dict[tuple[int, int], np.ndarray] = {}
    state = {"valid": None, "first": False}

    def make_hook(layer: int):
        def hook(module, args, kwargs, output):
            for weights in output.weights:
                stats.add(layer, weights, state["valid"])
                if state["first"]:
                    padded = args[0].shape[1]  # the layer input (B, N, E)
                    length = int(state["valid"][0].sum()) if state["valid"] is not None else padded
                    crop = min(map_frames, length)
                    dense = first_row_dense(weights, padded)[:, :crop, :crop]  # (h, F, F)
                    for slot, head in enumerate(weights.heads):
                        maps[(layer, head)] = dense[slot].float().cpu().numpy()
            output.weights.clear()  # free this layer's weights before the next layer runs

        return hook

    handles = [m.register_forward_hook(make_hook(i), with_kwargs=True) for i, m in enumerate(modules)]
    try:
        for index, (valid, run) in enumerate(batches):
            state["valid"], state["first"] = valid, index == 0
            run()
    finally:
        for handle in handles:
            handle.remove()
    return stats, maps


@torch.no_grad()
def analyze_attention(
    model: torch.nn.Module,
    waves: list[torch.Tensor],
    *,
    utt_ids: list[str] | None = None,
    batch_size: int = 1,
    windows=DEFAULT_WINDOWS,
    coverages=COVERAGES,
    map_frames: int = 150,
    progress: bool = True,
) -> AttentionAnalysis:
    """Run ``model`` (any wav2vec2 class, eval mode) over ``waves`` and measure every head.

    Utterances go through in padded batches of ``batch_size`` (padding queries and keys are excluded). The
    first utterance's weights over its first ``map_frames`` frames are kept for example attention maps.
    """
    backbone = backbone_of(model)

    def batches():
        for start in tqdm(range(0, len(waves), batch_size), desc="attention", unit="batch", disable=not progress):
            features = inference_features(backbone, list(waves[start : start + batch_size]))
            valid = None if features.padding_mask is None else ~features.padding_mask
            yield valid, lambda features=features: backbone.encode(features, return_weights=True,
                                                                   keep_layer_outputs=False)

    stats, maps = measure_heads(attention_modules(model), batches(), map_frames)
    frame_ms = frame_milliseconds(model)
    return AttentionAnalysis(
        stats.results(frame_ms, windows, coverages),
        frame_ms,
        list(windows),
        len(waves),
        sum(w.numel() for w in waves) / 16000,
        maps,
        utt_ids[0] if utt_ids else None,
    )


@torch.no_grad()
def analyze_lm_attention(
    model: torch.nn.Module,
    token_windows: list[torch.Tensor],
    *,
    windows=DEFAULT_WINDOWS,
    coverages=COVERAGES,
    map_frames: int = 150,
    name: str | None = None,
    progress: bool = True,
) -> AttentionAnalysis:
    """The same measurements for a :class:`~seqattn.models.lm.TransformerLM` over windows of token ids (each
    (N,) long); distances are in tokens."""
    device = module_device(model)

    def batches():
        for tokens in tqdm(token_windows, desc="attention", unit="window", disable=not progress):
            yield None, lambda tokens=tokens: model(tokens[None].to(device), return_weights=True)

    modules = [block.attention for block in model.blocks]
    stats, maps = measure_heads(modules, batches(), map_frames)
    return AttentionAnalysis(
        stats.results(None, windows, coverages),
        None,
        list(windows),
        len(token_windows),
        float(sum(t.numel() for t in token_windows)),
        maps,
        name,
        unit="tokens",
    )


def first_row_dense(weights: AttentionWeights, length: int) -> torch.Tensor:
    """(h, N, N) dense weights of the batch's first utterance only (N: the padded batch length)."""
    first = AttentionWeights(
        weights.kind,
        weights.heads,
        weights.weights[:1],
        None if weights.query_index is None else weights.query_index[:1],
        None if weights.key_index is None else weights.key_index[:1],
        weights.window_left,
    )
    return first.to_dense(length)[0]


def default_example_heads(analysis: AttentionAnalysis) -> list[tuple[int, int]]:
    """The most and least local head (by mean distance) of the first, middle and last layer."""
    chosen = []
    for layer in sorted({0, analysis.num_layers // 2, analysis.num_layers - 1}):
        heads = [s for s in analysis.heads if s.layer == layer]
        for s in (min(heads, key=lambda s: s.mean_distance_frames), max(heads, key=lambda s: s.mean_distance_frames)):
            if (s.layer, s.head) not in chosen:
                chosen.append((s.layer, s.head))
    return chosen


def write_attention_outputs(
    analysis: AttentionAnalysis,
    out_dir: str | Path,
    *,
    formats=("png",),
    example_heads: list[tuple[int, int]] | None = None,
    extra: dict | None = None,
) -> dict:
    """attention.json, attention.csv and the figures; returns the JSON written."""
    import json

    from . import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    values = {**(extra or {}), **analysis.to_json()}
    (out_dir / "attention.json").write_text(json.dumps(values, indent=1) + "\n")
    analysis.write_csv(out_dir / "attention.csv")
    unit = analysis.unit if analysis.frame_ms is None else f"frames of {analysis.frame_ms:g} ms"
    plots.heatmap(
        analysis.matrix("mean_distance_frames"),
        f"mean attention distance ({unit})",
        analysis.unit,
        out_dir,
        "mean_distance",
        formats,
    )
    plots.heatmap(
        analysis.matrix("w95"), "w95: smallest +-w holding 95% of the mass", analysis.unit, out_dir, "w95", formats
    )
    plots.mass_curves(analysis.windows, analysis.layer_mass_curves(), unit, out_dir, formats)
    heads = example_heads or default_example_heads(analysis)
    maps = {key: analysis.example_maps[key] for key in heads if key in analysis.example_maps}
    if maps:
        titles = {
            key: f"layer {key[0]} head {key[1]} ({analysis.head(*key).kind}, "
            f"d={analysis.head(*key).mean_distance_frames:.1f})"
            for key in maps
        }
        plots.attention_maps(maps, titles, out_dir, formats, analysis.example_utterance)
    return values
