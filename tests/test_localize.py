"""`seqattn convert localize`: windows from measured attention, exact weight transfer, distillation, report."""
import json

import numpy as np
import pytest
import torch
from audio_fixtures import make_data_dir

from seqattn import load_model
from seqattn.analysis.attention import analyze_attention
from seqattn.cli.main import main as cli_main
from seqattn.data.text import CharVocabulary
from seqattn.interop.localize import LocalizeError, choose_windows, group_head_windows, localize_model
from seqattn.models.io import save_model
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2Model, tiny
from seqattn.nn import AttentionConfig
from seqattn.nn.heads import LocalHeads
from seqattn.train.distill import DistillConfig, distill_attention


def uniform_full_model() -> Wav2Vec2Model:
    model = Wav2Vec2Model(tiny()).eval()
    for layer in model.encoder.layers:
        torch.nn.init.zeros_(layer.attention.q_proj.weight)
        torch.nn.init.zeros_(layer.attention.q_proj.bias)
    return model


def test_windows_are_the_analytic_coverage_of_uniform_heads():
    model = uniform_full_model()
    wave = torch.randn(16000)
    frames = int(model.output_lengths(torch.tensor([16000]))[0])
    analysis = analyze_attention(model, [wave], coverages=(0.5, 0.8), progress=False)
    for coverage in (0.5, 0.8):
        # uniform over all n frames: the share inside +-w, averaged over queries, reaches `coverage` at w
        share = [np.mean([(min(frames, i + w + 1) - max(0, i - w)) / frames for i in range(frames)])
                 for w in range(frames)]
        expected = next(w for w, s in enumerate(share) if s >= coverage - 1e-9)
        windows = choose_windows(model.config, analysis, coverage)
        assert [w.window_left for w in windows] == [expected, expected]
        assert all(w.converted and w.head_windows == [expected] * 4 for w in windows)
    rounded = choose_windows(model.config, analysis, 0.5, multiple=16)
    assert all(w.window_left % 16 == 0 and w.window_left >= w.window for w in rounded)


def test_localized_model_with_windows_covering_everything_is_the_same_function():
    model = Wav2Vec2ForCTC(tiny(vocab_size=9)).eval()
    waves = [torch.randn(15000), torch.randn(9000)]
    analysis = analyze_attention(model, waves, progress=False)
    windows = choose_windows(model.config, analysis, 0.95, min_window=100)  # longer than the inputs
    local = localize_model(model, windows)
    assert all(local.config.attention_for(i).local.heads == 4 for i in range(2))
    with torch.no_grad():
        for wave in waves:
            np.testing.assert_allclose(local(wave[None])[0].numpy(), model(wave[None])[0].numpy(), atol=1e-5)
    narrow = localize_model(model, choose_windows(model.config, analysis, 0.5))
    with torch.no_grad():
        assert not torch.allclose(narrow(waves[0][None])[0], model(waves[0][None])[0], atol=1e-4)


def test_local_layers_are_narrowed_never_widened_and_mixed_layers_refused():
    config = tiny(attention=AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=3, window_right=3)))
    model = Wav2Vec2Model(config).eval()
    analysis = analyze_attention(model, [torch.randn(16000)], progress=False)
    windows = choose_windows(config, analysis, 0.999)
    assert all(w.window_left <= 3 and w.window_right <= 3 for w in windows)
    mixed = tiny(attention=AttentionConfig(num_heads=4, local=LocalHeads(heads=2, window_left=3, window_right=3)))
    with pytest.raises(LocalizeError, match="mixes head kinds"):
        choose_windows(mixed, analyze_attention(Wav2Vec2Model(mixed).eval(), [torch.randn(8000)], progress=False), 0.9)
    with pytest.raises(LocalizeError, match="not 0.97"):
        choose_windows(config, analysis, 0.97)


def test_distillation_trains_only_attention_and_recovers_the_teacher():
    """A student whose windows hold everything but whose attention projections were perturbed can become
    the teacher again: distillation must find its way back through the local kernel's gradients."""
    teacher = Wav2Vec2Model(tiny()).eval()
    waves = [torch.randn(16000) for _ in range(6)]
    analysis = analyze_attention(teacher, waves, progress=False)
    student = localize_model(teacher, choose_windows(teacher.config, analysis, 0.95, min_window=60))
    with torch.no_grad():
        for layer in student.encoder.layers:
            for proj in (layer.attention.v_proj, layer.attention.out_proj):
                proj.weight.add_(0.05 * torch.randn_like(proj.weight))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = distill_attention(
        student,
        teacher,
        waves,
        [0, 1],
        DistillConfig(steps=40, lr=2e-3, warmup=3, batch_size=2, crop_seconds=0.6),
        progress=False,
    )
    assert result.held_out_after < 0.3 * result.held_out_before
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(".attention." in k for k in changed)
    assert result.trained_parameters == sum(p.numel() for n, p in student.named_parameters() if ".attention." in n)


@pytest.mark.parametrize(
    "model",
    [{}, {"frontend": "fbank", "fbank_bins": 40, "encoder_block": "conformer", "conformer_kernel": 5}],
    ids=["cnn-transformer", "fbank-conformer"],
)
def test_cli_reports_windows_speed_and_error_rates_then_the_model_transcribes(tmp_path, capsys, model):
    texts = ["नमस्ते भारत", "हिंदी"]
    vocab = CharVocabulary.build(texts)
    model_dir = save_model(
        Wav2Vec2ForCTC(tiny(vocab_size=len(vocab), **model)),
        tmp_path / "full",
        extra_files={"tokens.json": vocab.to_json()},
    )
    data = make_data_dir(tmp_path, "test", 4, "hi", texts=texts)
    out = tmp_path / "local"
    code = cli_main(
        [
            "convert",
            "localize",
            str(model_dir),
            str(out),
            "--data",
            str(data),
            "--coverage",
            "0.9",
            "--distill",
            str(data),
            "--distill-steps",
            "3",
            "--distill-crop-seconds",
            "0.5",
            "--test",
            str(data),
            "--bench-seconds",
            "2",
            "--bench-reps",
            "1",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "localize.json").read_text())
    assert report["coverage"] == 0.9 and len(report["windows"]) == 2
    assert report["speed"]["before_encoder_s"] > 0 and report["speed"]["after_total_s"] > 0
    assert report["test"]["before"]["utterances"] == 4 and "cer_change" in report["test"]
    assert report["distillation"]["steps"] == 3
    local = load_model(out)
    assert all(local.config.attention_for(i).local.heads == 4 for i in range(2))
    assert (out / "tokens.json").read_text() == (model_dir / "tokens.json").read_text()
    assert (
        cli_main(["transcribe", str(out), "--data-dir", str(data), "--output-dir", str(tmp_path / "tr"), "--quiet"])
        == 0
    )
    # from a saved analysis: the coverage must be one it holds
    assert (
        cli_main(["analyze", "attention", str(model_dir), str(data), "--out-dir", str(tmp_path / "an"), "--quiet"]) == 0
    )
    capsys.readouterr()
    assert (
        cli_main(
            [
                "convert",
                "localize",
                str(model_dir),
                str(tmp_path / "l2"),
                "--analysis",
                str(tmp_path / "an" / "attention.json"),
                "--coverage",
                "0.97",
                "--bench-seconds",
                "0",
            ]
        )
        == 2
    )
    assert "not 0.97" in capsys.readouterr().err and not (tmp_path / "l2").exists()
    assert (
        cli_main(
            [
                "convert",
                "localize",
                str(model_dir),
                str(tmp_path / "l3"),
                "--analysis",
                str(tmp_path / "an" / "attention.json"),
                "--coverage",
                "0.95",
                "--bench-seconds",
                "0",
            ]
        )
        == 0
    )


def test_per_head_windows_follow_each_heads_own_need():
    """Each head gets its own need, rounded up to the multiple, unless a narrower kernel call would save less
    than a quarter of its keys (then it shares the wider window of heads it would be split from)."""
    model = Wav2Vec2ForCTC(tiny(vocab_size=9)).eval()
    wave = torch.randn(16000)
    analysis = analyze_attention(model, [wave], coverages=(0.9,), progress=False)
    needs = {0: [3, 20, 1, 60], 1: [5, 5, 40, 0]}
    for stats in analysis.heads:  # give every head its own measured need
        stats.coverage_windows[0.9] = needs[stats.layer][stats.head]
    windows = choose_windows(model.config, analysis, 0.9, per_head=True, multiple=2)
    # keys per query of the fused kernel (2w + 1): +-60 121, +-20 41, +-4 9, +-2 5 (<= 0.75 * 9: its own call);
    # +-40 81, +-6 13, +-2 5
    assert [w.head_pairs for w in windows] == [
        [(4, 4), (20, 20), (2, 2), (60, 60)],
        [(6, 6), (6, 6), (40, 40), (2, 2)],
    ]  # a need of 0 -> min_window 1 -> 2
    assert [(w.window_left, w.window_right) for w in windows] == [(60, 60), (40, 40)]
    local = localize_model(model, windows)
    assert local.config.attention_for(0).local.windows == [[4, 4], [20, 20], [2, 2], [60, 60]]
    # the localized layer equals the full one with each head's own band applied: compare to a model whose
    # layers are local with one window per layer, head by head
    with torch.no_grad():
        per_head = local(wave[None])[0]
        widest = localize_model(model, choose_windows(model.config, analysis, 0.9, multiple=2))(wave[None])[0]
    assert not torch.allclose(per_head, widest, atol=1e-5)  # narrower heads do change the function
    # a local model's heads are narrowed, never widened: rounding up to 4 changes nothing
    again = choose_windows(local.config, analysis, 0.9, per_head=True, multiple=4)
    assert again[0].head_pairs == [(4, 4), (20, 20), (2, 2), (60, 60)] and not again[0].converted
    wide = Wav2Vec2ForCTC(
        tiny(
            vocab_size=9,
            attention=AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=128, window_right=128)),
        )
    ).eval()
    narrowed = choose_windows(wide.config, analysis, 0.9, per_head=True)
    assert narrowed[0].head_pairs == [(3, 3), (20, 20), (1, 1), (60, 60)] and narrowed[0].converted
    # needs within a quarter of the keys of the widest share its window: one kernel call, nothing split
    assert group_head_windows([55, 61, 58, 60]) == [61, 61, 61, 61]
    assert group_head_windows([8, 128, 32, 8]) == [8, 128, 32, 8]
    # beyond the fused kernel's reach the blocked kernel's keys count (window plus a 64-query block): +-200 464
    # keys, +-150 364 (> 0.75 * 464: shares +-200), +-100 201 keys in the fused kernel
    assert group_head_windows([200, 150, 100]) == [200, 200, 100]
