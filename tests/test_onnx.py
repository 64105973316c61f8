"""ONNX export and the onnxruntime backend, checked against PyTorch and against the dense masked reference.

The exporter and onnxruntime are code nobody here wrote: the export must give PyTorch's logits within 1e-4
on several lengths and batch sizes, and transcription through it must give PyTorch's transcripts.
"""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'seqattn[onnx]'")
pytest.importorskip("onnxscript", reason="needs the onnx extra: pip install 'seqattn[onnx]'")

from audio_fixtures import tone_wave
from dense_reference import band_allowed, masked_attention
from model_fixtures import ctc_model_dir

from seqattn.cli.main import main as cli_main
from seqattn.interop.onnx import OnnxCTC, OnnxError, export_onnx
from seqattn.models.io import load_model
from seqattn.models.wav2vec2.longform import LongFormCTC
from seqattn.nn import AttentionConfig
from seqattn.nn.band_export import gathered_band_attention
from seqattn.nn.heads import DilatedHeads, GlobalTokenHeads, LocalHeads, PooledHeads, ShiftedWindowHeads


@pytest.mark.parametrize("left,right,n,pad", [(5, 5, 37, 0), (16, 3, 101, 7), (7, 0, 64, 5), (40, 40, 23, 4),
                                              (0, 0, 9, 0)])
def test_gathered_band_matches_dense_reference(left, right, n, pad):
    torch.manual_seed(n)
    q, k, v = (torch.randn(2, 3, n, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    padding = torch.zeros(2, n, dtype=torch.bool)
    if pad:
        padding[1, n - pad:] = True
    valid = (~padding)[:, None].expand(2, 3, n)
    out = gathered_band_attention(q, k, v, left, right, valid, scale=8**-0.5)
    ref, _ = masked_attention(q, k, v, band_allowed(n, left, right, padding))
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    if right == 0:  # causal: nothing after position 20 changes the outputs up to 20
        k2, v2 = k.detach().clone(), v.detach().clone()
        k2[:, :, 21:] += 5.0
        v2[:, :, 21:] -= 3.0
        again = gathered_band_attention(q.detach(), k2, v2, left, right, valid, scale=8**-0.5)
        torch.testing.assert_close(again[:, :, :21], out.detach()[:, :, :21])


def test_export_is_used_while_exporting_only():
    """The training kernel stays the default; the traceable one answers only under torch.export."""
    from seqattn.nn import local_attention

    q = torch.randn(1, 2, 50, 8)
    plain = local_attention(q, q, q, 6, 6)
    torch.testing.assert_close(plain, gathered_band_attention(q, q, q, 6, 6, torch.ones(1, 2, 50, dtype=torch.bool),
                                                              scale=8**-0.5))


HEAD_MIXES = {  # bounded reach: per-head local windows and a dilated head (layer-norm extractor); every other
    # exportable kind (shifted windows, pooled, global and full heads) beside a GroupNorm extractor; the
    # filterbank front end with Conformer blocks. One layer each: every head kind is in the graph, and the
    # export (the slow part) takes a third less time than with two.
    "local": dict(
        attention=AttentionConfig(
            num_heads=4,
            local=LocalHeads(heads=3, windows=[[8, 8], [2, 2], [5, 0]]),
            dilated=DilatedHeads(heads=1, dilation=3, window=2),
        ),
        extractor_mode="layer_norm",
        num_layers=1,
    ),
    "mixed-groupnorm": dict(
        attention=AttentionConfig(
            num_heads=6,
            local=LocalHeads(heads=1, window_left=5, window_right=11),
            shifted_window=ShiftedWindowHeads(heads=1, window=12),
            pooled=PooledHeads(heads=1, pool_size=3),
            global_tokens=GlobalTokenHeads(heads=2, tokens=3, window=4),
        ),
        extractor_mode="default",
        num_layers=1,
    ),
    "fbank-conformer": dict(
        attention=AttentionConfig(
            num_heads=4,
            local=LocalHeads(heads=3, window_left=6, window_right=6),
            dilated=DilatedHeads(heads=1, dilation=2, window=3),
        ),
        frontend="fbank",
        fbank_bins=40,
        fbank_stack=4,
        encoder_block="conformer",
        conformer_kernel=5,
        num_layers=1,
    ),
}


@pytest.fixture(scope="module", params=sorted(HEAD_MIXES))
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"onnx-{request.param}")
    config = dict(HEAD_MIXES[request.param])
    model_dir = ctc_model_dir(root / "model", **config)
    report = export_onnx(model_dir, root / "model.onnx")
    return model_dir, report


@pytest.mark.slow
def test_export_matches_torch_on_several_lengths_and_batches(exported):
    model_dir, report = exported
    assert report.max_difference < 1e-4 and len(report.checked_samples) == 3
    model = load_model(model_dir)
    runtime = OnnxCTC(report.path)
    generator = torch.Generator().manual_seed(1)
    shortest = runtime.min_samples  # one frame: 400 samples for the CNN, 880 for 4 stacked fbank frames
    for lengths in ([shortest], [16000], [4321, 9999, 27183], [shortest + 100, 48000]):
        waves = [torch.randn(n, generator=generator) for n in lengths]
        want = LongFormCTC(model).logits(waves)
        got = runtime.logits(waves)
        for n, a, b in zip(lengths, got, want):
            assert a.shape == b.shape == (runtime.num_frames(n), model.config.vocab_size)
            assert float((a - b).abs().max()) < 1e-4


@pytest.mark.slow
def test_onnx_file_carries_config_and_vocabulary(exported):
    model_dir, report = exported
    runtime = OnnxCTC(report.path)
    assert runtime.vocabulary.tokens == json.loads((model_dir / "tokens.json").read_text())["tokens"]
    assert runtime.config == load_model(model_dir).config


@pytest.mark.slow
def test_transcribe_with_onnxruntime_gives_torch_transcripts(exported, tmp_path, capsys):
    model_dir, report = exported
    rng = np.random.default_rng(3)
    for index, seconds in enumerate((0.7, 1.9, 3.3)):
        sf.write(tmp_path / f"utt{index}.wav", tone_wave(seconds, 16000, rng), 16000)
    texts = {}
    for backend, model in (("torch", model_dir), ("onnxruntime", report.path)):
        out = tmp_path / backend
        code = cli_main(
            [
                "transcribe",
                str(model),
                str(tmp_path),
                "--output-dir",
                str(out),
                "--batch-size",
                "3",
                "--quiet",
                "--backend",
                backend,
                "--output-format",
                "json",
            ]
        )
        assert code == 0
        texts[backend] = {path.stem: json.loads(path.read_text())["text"] for path in sorted(out.glob("*.json"))}
    assert len(texts["torch"]) == 3 and any(texts["torch"].values())
    assert texts["onnxruntime"] == texts["torch"]


@pytest.mark.slow
def test_long_input_runs_in_chunks_with_onnx(exported):
    """No streaming in ONNX: a long input runs in overlapping chunks, each frame with >= 20 s of context."""
    _, report = exported
    runtime = OnnxCTC(report.path)
    wave = torch.randn(16000 * 3)
    chunked = runtime.chunked_logits(wave, chunk=16000, overlap=16000 // 6)
    assert chunked.shape[0] == runtime.num_frames(wave.numel())
    fbank = runtime.config.frontend == "fbank"  # per-utterance normalisation: one pass, never chunks by default
    assert runtime.default_chunk_seconds == (30.0 if runtime.has_full_attention else 0.0 if fbank else 120.0)
    if runtime.config.attention.reach is not None and not fbank:
        # every head's reach is bounded: chunks whose overlap covers the receptive field give one pass's logits
        wave = torch.randn(16000 * 5)
        whole = runtime.logits([wave])[0]
        torch.testing.assert_close(runtime.chunked_logits(wave, chunk=32000, overlap=8000), whole, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "routed", [dict(routing=dict(heads=1, clusters=2, window=8)), dict(block_routed=dict(heads=1, block=8, top_k=1))]
)
def test_routed_heads_are_refused_before_export(tmp_path, routed):
    model_dir = ctc_model_dir(
        tmp_path / "routed", attention=AttentionConfig(num_heads=4, local=LocalHeads(heads=2)).replace(**routed)
    )
    with pytest.raises(OnnxError, match="layer 0 has routed heads"):
        export_onnx(model_dir, tmp_path / "routed.onnx")
    assert not (tmp_path / "routed.onnx").exists()


def test_bad_onnx_inputs_are_clear_errors(tmp_path, capsys):
    model_dir = ctc_model_dir(tmp_path / "model", attention=AttentionConfig(num_heads=4, local=LocalHeads(heads=4)))
    assert cli_main(["transcribe", str(model_dir), str(tmp_path), "--backend", "onnxruntime"]) == 2
    assert "export this model first: seqattn export onnx" in capsys.readouterr().err
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    assert cli_main(["transcribe", str(tmp_path / "broken.onnx"), str(tmp_path)]) == 2
    assert "onnxruntime cannot load it" in capsys.readouterr().err
    assert cli_main(["export", "onnx", str(tmp_path / "nowhere"), str(tmp_path / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
