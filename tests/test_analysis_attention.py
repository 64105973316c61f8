"""`seqattn analyze attention`: every metric checked against heads whose attention is known analytically."""
import json
import math

import numpy as np
import pytest
import torch
from audio_fixtures import make_data_dir

from seqattn.analysis.attention import HeadStatistics, analyze_attention, smallest_window
from seqattn.cli.main import main as cli_main
from seqattn.models.io import save_model
from seqattn.models.wav2vec2 import Wav2Vec2Model, tiny
from seqattn.nn import AttentionConfig, AttentionWeights
from seqattn.nn.heads import DilatedHeads, GlobalTokenHeads, LocalHeads, RoutingHeads, ShiftedWindowHeads

WINDOWS = (1, 2, 4, 8, 16, 32, 64)


def expected_from_rows(rows_visible: list[tuple[int, list[int]]]):
    """Analytic statistics of heads that attend uniformly over each query's visible keys.

    rows_visible: (query position, its visible key positions). Each row puts 1/n on each of its n keys.
    """
    hist = np.zeros(4096)
    entropy = 0.0
    for query, keys in rows_visible:
        for key in keys:
            hist[abs(query - key)] += 1.0 / len(keys)
        entropy += math.log(len(keys))
    rows = len(rows_visible)
    mass = hist / rows
    cumulative = np.cumsum(mass)
    return {
        "rows": rows,
        "mean_distance_frames": float((np.arange(mass.size) * mass).sum()),
        "self_mass": float(mass[0]),
        "entropy": entropy / rows,
        "w90": int(np.nonzero(cumulative >= 0.9 - 1e-9)[0][0]),
        "w95": int(np.nonzero(cumulative >= 0.95 - 1e-9)[0][0]),
        "mass_within": {w: float(cumulative[w]) for w in WINDOWS},
    }


def check(stats, expected, tol=1e-5):
    assert stats.rows == expected["rows"]
    for name in ("mean_distance_frames", "self_mass", "entropy"):
        assert getattr(stats, name) == pytest.approx(expected[name], abs=tol), name
    assert (stats.w90, stats.w95) == (expected["w90"], expected["w95"])
    for w in WINDOWS:
        assert stats.mass_within[w] == pytest.approx(expected["mass_within"][w], abs=tol)


def uniform_model(window: int) -> Wav2Vec2Model:
    """Layer 0: four local heads over +-window; layer 1: four full heads. Zero queries make every head
    attend uniformly over the keys it may see (scores are all equal)."""
    config = tiny(layer_attention=[
        AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=window, window_right=window)),
        AttentionConfig(num_heads=4),
    ])
    model = Wav2Vec2Model(config).eval()
    for layer in model.encoder.layers:
        torch.nn.init.zeros_(layer.attention.q_proj.weight)
        torch.nn.init.zeros_(layer.attention.q_proj.bias)
    return model


def test_one_hot_previous_frame_head_dense_and_banded():
    n = 37
    dense = torch.zeros(1, 1, n, n)
    dense[0, 0, 0, 0] = 1.0  # the first frame has no predecessor and attends itself
    dense[0, 0, torch.arange(1, n), torch.arange(0, n - 1)] = 1.0
    banded = torch.zeros(1, 1, n, 2)  # window_left=1: slot 0 is i-1, slot 1 is i
    banded[0, 0, 1:, 0] = 1.0
    banded[0, 0, 0, 1] = 1.0
    for weights in (AttentionWeights("full", (0,), dense), AttentionWeights("local", (0,), banded, window_left=1)):
        stats = HeadStatistics(1, [1])
        stats.add(0, weights, None)
        (head,) = stats.results(frame_ms=20.0, windows=WINDOWS)
        assert head.mean_distance_frames == pytest.approx((n - 1) / n)
        assert head.mean_distance_ms == pytest.approx(20.0 * (n - 1) / n)
        assert head.self_mass == pytest.approx(1 / n)
        assert head.entropy == pytest.approx(0.0, abs=1e-12)
        assert (head.w90, head.w95) == (1, 1)
        assert head.mass_within[1] == pytest.approx(1.0)


def test_uniform_local_and_full_heads_in_a_padded_batch_match_analytic_values():
    window = 3
    model = uniform_model(window)
    waves = [torch.randn(16000), torch.randn(11000)]  # a padded batch of two
    frames = [int(n) for n in model.output_lengths(torch.tensor([w.numel() for w in waves]))]
    analysis = analyze_attention(model, waves, batch_size=2, windows=WINDOWS, progress=False)
    local_rows = [(i, list(range(max(0, i - window), min(n, i + window + 1)))) for n in frames for i in range(n)]
    full_rows = [(i, list(range(n))) for n in frames for i in range(n)]  # padding keys are not visible
    for head in range(4):
        check(analysis.head(0, head), expected_from_rows(local_rows))
        check(analysis.head(1, head), expected_from_rows(full_rows))
    assert {s.kind for s in analysis.heads} == {"local", "full"}
    # the same analysis one utterance at a time (no padding at all) gives the same numbers
    single = analyze_attention(model, waves, batch_size=1, windows=WINDOWS, progress=False)
    for a, b in zip(analysis.heads, single.heads):
        assert a.mean_distance_frames == pytest.approx(b.mean_distance_frames, abs=1e-6)
        assert a.w95 == b.w95


def test_banded_weights_give_the_same_statistics_as_the_dense_eager_path():
    full = Wav2Vec2Model(tiny()).eval()
    wide = tiny(attention=AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=500, window_right=500)))
    local = Wav2Vec2Model(wide).eval()
    local.load_state_dict(full.state_dict())
    waves = [torch.randn(13000), torch.randn(9000)]
    a = analyze_attention(full, waves, batch_size=2, progress=False)
    b = analyze_attention(local, waves, batch_size=2, progress=False)
    for x, y in zip(a.heads, b.heads):
        assert (x.kind, y.kind) == ("full", "local")
        assert x.rows == y.rows
        assert x.mean_distance_frames == pytest.approx(y.mean_distance_frames, rel=1e-5)
        assert x.entropy == pytest.approx(y.entropy, rel=1e-5)
        assert (x.w90, x.w95) == (y.w90, y.w95)
    assert max(s.mean_distance_frames for s in a.heads) > 5  # random heads are far from local: a real check


def test_routed_and_shifted_window_heads_account_for_all_their_mass():
    mixed = AttentionConfig(
        num_heads=4,
        local=LocalHeads(heads=1, window_left=2, window_right=2),
        routing=RoutingHeads(heads=2, clusters=2, window=8),
        shifted_window=ShiftedWindowHeads(heads=1, window=8),
    )
    model = Wav2Vec2Model(tiny(attention=mixed)).eval()
    analysis = analyze_attention(model, [torch.randn(12000)], progress=False)
    kinds = [analysis.head(0, h).kind for h in range(4)]
    assert kinds == ["local", "routing", "routing", "window"]
    for stats in analysis.heads:
        assert stats.mass_within[512] == pytest.approx(1.0, abs=1e-5)
    assert analysis.head(0, 0).w95 <= 2  # the local head cannot look further than its window
    assert analysis.head(0, 3).w95 < 8  # nor a head inside windows of 8 frames


def test_smallest_window_is_exact():
    cumulative = np.cumsum([0.5, 0.3, 0.1, 0.1])
    assert smallest_window(cumulative, 0.5) == 0
    assert smallest_window(cumulative, 0.8) == 1
    assert smallest_window(cumulative, 0.85) == 2
    assert smallest_window(cumulative, 1.0) == 3


def test_cli_writes_json_csv_and_plots_and_reports_unreadable_inputs(tmp_path, capsys):
    model_dir = save_model(uniform_model(4), tmp_path / "model")
    data = make_data_dir(tmp_path, "test", 3, "hi", seconds=(0.8, 1.2))
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav file")
    with open(data / "wav.scp", "a") as handle:
        handle.write(f"hi-zzz-9999 {tmp_path / 'broken.wav'}\n")
    for name in ("utt2spk", "utt2lang"):
        with open(data / name, "a") as handle:
            handle.write(f"hi-zzz-9999 {'hi-zzz' if name == 'utt2spk' else 'hi'}\n")
    out = tmp_path / "analysis"
    code = cli_main(
        [
            "analyze",
            "attention",
            str(model_dir),
            str(data),
            "--out-dir",
            str(out),
            "--quiet",
            "--plot-format",
            "png,svg",
            "--heads",
            "0:1,1:2",
        ]
    )
    assert code == 0
    values = json.loads((out / "attention.json").read_text())
    assert values["utterances"] == 3 and len(values["heads"]) == 8
    assert [f["input"] for f in values["failures"]] == ["hi-zzz-9999"]
    assert values["frame_ms"] == pytest.approx(20.0)
    csv_rows = (out / "attention.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + 8 and csv_rows[0].startswith("layer,head,kind")
    for name in ("mean_distance", "w95", "mass_vs_window", "attention_maps"):
        for fmt in ("png", "svg"):
            assert (out / f"{name}.{fmt}").stat().st_size > 1000
    assert "skipped hi-zzz-9999" in capsys.readouterr().err
    local = [h for h in values["heads"] if h["layer"] == 0]
    assert all(h["w95"] <= 4 and h["kind"] == "local" for h in local)


def test_cli_error_for_inputs_that_cannot_be_read(tmp_path, capsys):
    model_dir = save_model(uniform_model(2), tmp_path / "model")
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "bad.wav").write_bytes(b"\0" * 10)
    code = cli_main(["analyze", "attention", str(model_dir), str(tmp_path / "audio"), "--out-dir", str(tmp_path / "o")])
    assert code == 2
    assert "none of the inputs could be read" in capsys.readouterr().err


def test_routed_rows_are_merged_per_query_like_the_dense_matrix():
    from seqattn.nn import RoutingAttention

    routing = RoutingAttention(2, 8, num_clusters=3, window=6, causal=False).eval()
    q, k, v = (torch.randn(2, 2, 17, 8) for _ in range(3))
    padding = torch.zeros(2, 17, dtype=torch.bool)
    padding[1, 13:] = True
    weights = routing(q, k, v, padding, return_weights=True).weights
    sparse = HeadStatistics(1, [2])
    sparse.add(0, weights, ~padding)
    dense = weights.to_dense(17)  # (B, h, N, N), rows of one query summed
    dense = dense / dense.sum(-1, keepdim=True).clamp(min=1e-30)  # each routed query's distribution
    routed = dense.sum(-1) > 0  # (B, h) queries that joined some cluster
    reference = HeadStatistics(1, [2])
    for head in range(2):
        reference.add(0, AttentionWeights("routing", (head,), dense[:, head : head + 1]), routed[:, head] & ~padding)
    for a, b in zip(sparse.results(20.0, WINDOWS), reference.results(20.0, WINDOWS)):
        assert a.rows == b.rows > 0
        assert a.mean_distance_frames == pytest.approx(b.mean_distance_frames, rel=1e-9)
        assert a.entropy == pytest.approx(b.entropy, rel=1e-9)
        assert a.mass_within == pytest.approx(b.mass_within, rel=1e-9)


def test_language_model_heads_from_text_match_analytic_values(tmp_path):
    """An LM whose heads are forced uniform: local heads over the 3 previous tokens and itself, full heads
    over every earlier token; analysed from a text file through the CLI."""
    from seqattn.data.lm_tokenizers import ByteTokenizer, tokenizer_to_json
    from seqattn.models.lm import TransformerLM, presets

    model = TransformerLM(
        presets.with_attention(presets.tiny(vocab_size=257), local=dict(heads=2, window_left=3), routing=dict(heads=0))
    ).eval()
    for block in model.blocks:
        torch.nn.init.zeros_(block.attention.q_proj.weight)  # the LM's projections have no bias
    model_dir = save_model(model, tmp_path / "lm", extra_files={"tokenizer.json": tokenizer_to_json(ByteTokenizer())})
    text = tmp_path / "text.txt"
    text.write_text("abcdefghij" * 10)  # 100 bytes + <bos> = 101 tokens: windows of 40, 40, 21
    out = tmp_path / "an"
    assert (
        cli_main(
            ["analyze", "attention", str(model_dir), str(text), "--out-dir", str(out), "--context", "40", "--quiet"]
        )
        == 0
    )
    values = json.loads((out / "attention.json").read_text())
    assert values["unit"] == "tokens" and values["utterances"] == 3
    lengths = [40, 40, 21]
    local = expected_from_rows([(i, list(range(max(0, i - 3), i + 1))) for n in lengths for i in range(n)])
    full = expected_from_rows([(i, list(range(i + 1))) for n in lengths for i in range(n)])
    for head in values["heads"]:
        expected = local if head["kind"] == "local" else full
        assert head["rows"] == expected["rows"]
        assert head["mean_distance_frames"] == pytest.approx(expected["mean_distance_frames"], abs=1e-5)
        assert head["entropy"] == pytest.approx(expected["entropy"], abs=1e-5)
        assert head["w95"] == expected["w95"] and head["mean_distance_ms"] is None
    assert {h["kind"] for h in values["heads"]} == {"local", "full"}


def test_uniform_dilated_heads_match_analytic_values():
    """Dilated heads: locality statistics from their (N, 2w+1) weights, never N x N, equal the analytic ones."""
    config = tiny(
        layer_attention=[
            AttentionConfig(num_heads=4, dilated=DilatedHeads(heads=4, dilation=3, window=2)),
            AttentionConfig(
                num_heads=4,
                local=LocalHeads(heads=2, window_left=2, window_right=2),
                dilated=DilatedHeads(heads=2, dilation=5, window=1),
            ),
        ]
    )
    model = Wav2Vec2Model(config).eval()
    for layer in model.encoder.layers:
        torch.nn.init.zeros_(layer.attention.q_proj.weight)
        torch.nn.init.zeros_(layer.attention.q_proj.bias)
    waves = [torch.randn(16000), torch.randn(11000)]
    frames = [int(n) for n in model.output_lengths(torch.tensor([w.numel() for w in waves]))]
    analysis = analyze_attention(model, waves, batch_size=2, windows=WINDOWS, progress=False)

    def rows(dilation, window):
        return [
            (i, [i + m * dilation for m in range(-window, window + 1) if 0 <= i + m * dilation < n])
            for n in frames
            for i in range(n)
        ]

    for head in range(4):
        check(analysis.head(0, head), expected_from_rows(rows(3, 2)))
    check(analysis.head(1, 2), expected_from_rows(rows(5, 1)))
    check(analysis.head(1, 0), expected_from_rows(rows(1, 2)))
    assert {s.kind for s in analysis.heads} == {"dilated", "local"}


def test_uniform_global_heads_match_analytic_values():
    """Global heads: each summary counts at its pooled mean position; with zero queries every slot (band keys
    and summaries) gets the same weight, and uniform pooling centres every summary on the utterance's middle."""
    config = tiny(
        layer_attention=[
            AttentionConfig(num_heads=4, global_tokens=GlobalTokenHeads(heads=4, tokens=2, window=2)),
            AttentionConfig(
                num_heads=4,
                local=LocalHeads(heads=2, window_left=1, window_right=1),
                global_tokens=GlobalTokenHeads(heads=2, tokens=1, pooling="mean", window=1),
            ),
        ]
    )
    model = Wav2Vec2Model(config).eval()
    for layer in model.encoder.layers:
        torch.nn.init.zeros_(layer.attention.q_proj.weight)
        torch.nn.init.zeros_(layer.attention.q_proj.bias)
    torch.nn.init.zeros_(model.encoder.layers[0].attention.global_attention.queries)
    waves = [torch.randn(16000), torch.randn(12000)]
    frames = [int(n) for n in model.output_lengths(torch.tensor([w.numel() for w in waves]))]
    assert all(n % 2 for n in frames)  # odd lengths: the middle is a frame, no rounding ties
    analysis = analyze_attention(model, waves, batch_size=2, windows=WINDOWS, progress=False)

    def rows(window, tokens):
        return [
            (i, [j for j in range(i - window, i + window + 1) if 0 <= j < n] + [(n - 1) // 2] * tokens)
            for n in frames
            for i in range(n)
        ]

    for head in range(4):
        check(analysis.head(0, head), expected_from_rows(rows(2, 2)))
    check(analysis.head(1, 2), expected_from_rows(rows(1, 1)))
    check(
        analysis.head(1, 0),
        expected_from_rows([(i, [j for j in (i - 1, i, i + 1) if 0 <= j < n]) for n in frames for i in range(n)]),
    )
    assert {s.kind for s in analysis.heads} == {"global", "local"}
