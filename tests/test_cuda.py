"""The GPU paths, on a GPU: attention against the banded kernel and the dense reference in fp32 and bf16,
training runs of a few updates resumed across a stop, the same greedy transcript on CPU and GPU, and
checkpoints moved between devices. Every test here skips, with its reason, where no CUDA GPU is visible
(tools/gpu_check.sh runs them on a GPU machine)."""
import json
from pathlib import Path

import pytest
import torch
from audio_fixtures import make_data_dir
from dense_reference import band_allowed, masked_attention

from seqattn.nn.heads import BlockRoutedHeads, DilatedHeads, GlobalTokenHeads, LocalHeads, RoutingHeads

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA GPU visible (torch.cuda.is_available() is False)"
    ),
]
REPO = Path(__file__).resolve().parents[1]
GPU = torch.device("cuda", 0)


def _qkv(n, dtype, heads=4, dim=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, heads, n, dim, generator=generator).to(GPU, dtype).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("n, left, right", [(1000, 64, 64), (777, 128, 0), (4099, 33, 7)])
def test_local_attention_on_the_gpu_matches_the_cpu_kernel_and_the_dense_reference(dtype, atol, n, left, right):
    from seqattn.nn import local_attention

    q, k, v = _qkv(n, dtype)
    mask = torch.zeros(2, n, dtype=torch.bool, device=GPU)
    mask[1, n - 37 :] = True  # padding in the second row
    out = local_attention(q, k, v, window_left=left, window_right=right, key_padding_mask=mask)
    out.float().square().sum().backward()
    grads = [t.grad.float().cpu() for t in (q, k, v)]
    cpu = [t.detach().float().cpu().requires_grad_() for t in (q, k, v)]
    ref, _ = masked_attention(*cpu, band_allowed(n, left, right, mask.cpu()))
    ref.square().sum().backward()
    valid = ~mask.cpu()[:, None, :, None]  # compare real queries only
    torch.testing.assert_close((out.float().cpu() * valid), ref * valid, atol=atol, rtol=atol)
    for grad, reference in zip(grads, (t.grad for t in cpu)):
        torch.testing.assert_close(grad, reference, atol=atol * 10, rtol=atol * 10)
    banded = local_attention(
        *(t.detach().float().cpu() for t in (q, k, v)),
        window_left=left,
        window_right=right,
        key_padding_mask=mask.cpu(),
    )
    torch.testing.assert_close(out.detach().float().cpu() * valid, banded * valid, atol=atol, rtol=atol)


@pytest.mark.parametrize("causal", [True, False])
def test_routing_heads_on_the_gpu_match_the_cpu(causal):
    from seqattn.nn import AttentionConfig, MultiHeadAttention

    torch.manual_seed(0)
    config = AttentionConfig(
        num_heads=4,
        causal=causal,
        local=LocalHeads(heads=2, window_left=16, window_right=0 if causal else 16),
        routing=RoutingHeads(heads=2, clusters=4, window=16),
    )
    module = MultiHeadAttention(64, config).eval()
    x = torch.randn(2, 301, 64)
    cpu_out = module(x).out
    gpu_out = module.to(GPU)(x.to(GPU)).out
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-4), (torch.bfloat16, 5e-2)])
def test_dilated_and_global_heads_on_the_gpu_match_the_cpu(causal, dtype, atol):
    """A layer of local, dilated and global heads on the GPU: outputs equal the CPU's (bf16 under autocast, the
    way training runs it), and so do the fp32 gradients."""
    from seqattn.nn import AttentionConfig, MultiHeadAttention

    torch.manual_seed(0)
    config = AttentionConfig(
        num_heads=4,
        causal=causal,
        local=LocalHeads(heads=2, window_left=16, window_right=0 if causal else 16),
        dilated=DilatedHeads(heads=1, dilation=3, window=8),
        global_tokens=GlobalTokenHeads(heads=1, window=16, tokens=4, block=32),
    )
    module = MultiHeadAttention(64, config)
    x = torch.randn(2, 1001, 64)
    mask = None if causal else torch.arange(1001)[None, :] >= torch.tensor([[1001], [777]])
    cpu_out = module(x, mask).out
    cpu_out.square().sum().backward()
    cpu_grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    module.to(GPU)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        gpu_out = module(x.to(GPU), None if mask is None else mask.to(GPU)).out
    gpu_out.float().square().sum().backward()
    real = slice(None) if mask is None else ~mask
    torch.testing.assert_close(gpu_out.float().cpu()[real], cpu_out.detach()[real], atol=atol, rtol=atol)
    for grad, reference in zip((p.grad.float().cpu() for p in module.parameters()), cpu_grads):
        if dtype == torch.float32:
            scale = float(reference.abs().max()) + 1e-6
            torch.testing.assert_close(grad / scale, reference / scale, atol=1e-3, rtol=1e-3)
        else:  # bf16 gradients of a sum of squares are too coarse to compare element-wise
            assert bool(torch.isfinite(grad).all())


def _lm_args(tmp_path, *extra):
    text = tmp_path / "train.txt"
    text.write_text("to be or not to be, that is the question. " * 300)
    return [
        "train-lm",
        str(REPO / "recipes" / "lm" / "tinyshakespeare_char.yaml"),
        f"data.train=[{text}]",
        f"run.output_dir={tmp_path / 'lm'}",
        "model.dim=64",
        "model.num_layers=2",
        "model.attention.num_heads=4",
        "model.attention.local.heads=2",
        "model.attention.routing.heads=2",
        "model.routing_layers=-1",
        "model.attention.local.window_left=16",
        "model.attention.routing.window=16",
        "model.attention.routing.clusters=4",
        "model.max_context=64",
        "data.seq_len=64",
        "data.batch_size=8",
        "optim.warmup_updates=2",
        "run.tensorboard=false",
        "run.save_every=2",
        "run.log_every=1",
        *extra,
    ]


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_lm_trains_on_the_gpu_and_resumes_after_a_stop(tmp_path, precision):
    from seqattn.cli.main import main as cli_main

    args = _lm_args(tmp_path, f"run.precision={precision}", "run.device=cuda")
    assert cli_main(args + ["optim.max_updates=6", "run.stop_after=3"]) == 0
    assert cli_main(args + ["optim.max_updates=6"]) == 0
    log = (tmp_path / "lm" / "train.log").read_text()
    assert f"device cuda:0, precision {precision}" in log and "resumed from" in log and "train update 6" in log


def test_compiled_lm_trains_on_the_gpu(tmp_path):
    """run.compile compiles each task's loss module (on a 2-core CPU: 85 s for 3 tiny updates, nearly all of it
    compilation, so it is checked here rather than in CI)."""
    from seqattn.cli.main import main as cli_main

    assert cli_main(_lm_args(tmp_path, "run.device=cuda", "run.compile=true", "optim.max_updates=4")) == 0
    assert "compiled" in (tmp_path / "lm" / "train.log").read_text()


def test_checkpoints_move_between_cpu_and_gpu(tmp_path):
    """A checkpoint written by a CPU run resumes on the GPU, and the GPU's checkpoint loads on the CPU with the
    same weights."""
    from seqattn import load_model
    from seqattn.cli.main import main as cli_main

    args = _lm_args(tmp_path)
    assert cli_main(args + ["optim.max_updates=2", "run.device=cpu"]) == 0
    assert cli_main(args + ["optim.max_updates=4", "run.device=cuda"]) == 0
    final = tmp_path / "lm" / "checkpoints" / "update_00000004"
    on_cpu, on_gpu = load_model(final, "cpu"), load_model(final, "cuda")
    for (name, a), (_, b) in zip(on_cpu.state_dict().items(), on_gpu.state_dict().items()):
        assert b.device.type == "cuda" and torch.equal(a, b.cpu()), name


def test_pretraining_and_finetuning_run_on_the_gpu(tmp_path):
    from seqattn.cli.main import main as cli_main

    data = make_data_dir(tmp_path, "train", 8, "hi", seconds=(1.0, 1.5), texts=["क ख ग", "ख ग"])
    pretrain = REPO / "recipes" / "wav2vec2" / "pretrain_tiny.yaml"
    assert (
        cli_main(
            [
                "pretrain",
                str(pretrain),
                f"data.train=[{{path: {data}}}]",
                f"run.output_dir={tmp_path / 'pt'}",
                "optim.max_updates=3",
                "run.save_every=3",
                "run.tensorboard=false",
                "run.device=cuda",
                "data.min_sample_size=8000",
            ]
        )
        == 0
    )
    finetune = REPO / "recipes" / "wav2vec2" / "finetune_tiny.yaml"
    init = sorted((tmp_path / "pt" / "checkpoints").glob("update_*"))[-1]
    assert (
        cli_main(
            [
                "finetune",
                str(finetune),
                f"init={init}",
                f"data.train=[{{path: {data}}}]",
                f"data.valid=[{{path: {data}}}]",
                f"run.output_dir={tmp_path / 'ft'}",
                "optim.max_updates=4",
                "run.save_every=2",
                "validate_every=2",
                "run.tensorboard=false",
                "run.device=cuda",
            ]
        )
        == 0
    )
    assert "device cuda:0" in (tmp_path / "ft" / "train.log").read_text()


def test_greedy_transcripts_are_the_same_on_cpu_and_gpu(tmp_path):
    from seqattn.data.audio import AudioSource
    from seqattn.decode.transcribe import InputItem, transcribe
    from seqattn.models.io import load_model, save_model
    from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, tiny
    from seqattn.nn import AttentionConfig

    tokens = ["<blank>", "<unk>", "|", "क", "ख", "ग"]
    torch.manual_seed(0)
    local = AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=8, window_right=8))
    model = Wav2Vec2ForCTC(tiny(vocab_size=len(tokens), attention=local)).eval()
    model_dir = save_model(
        model, tmp_path / "m", extra_files={"tokens.json": json.dumps({"type": "char", "tokens": tokens})}
    )
    data = make_data_dir(tmp_path, "d", 6, "hi", seconds=(0.8, 3.0))
    items = [InputItem(p.stem, AudioSource(str(p))) for p in sorted((tmp_path / "wav" / "d").glob("*.wav"))]
    from seqattn.data.vocabulary import load_vocabulary

    vocab = load_vocabulary(model_dir / "tokens.json")
    on_cpu = transcribe(load_model(model_dir, "cpu"), vocab, items, progress=False, batch_size=3)
    on_gpu = transcribe(load_model(model_dir, "cuda"), vocab, items, progress=False, batch_size=3)
    streamed = transcribe(load_model(model_dir, "cuda"), vocab, items, progress=False, stream_seconds=0.5)
    texts = lambda result: [t.text for t in result.transcripts]
    assert texts(on_cpu) == texts(on_gpu) == texts(streamed) and data.is_dir()


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-4), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("causal", [True, False])
def test_fused_flex_backend_matches_the_chunked_backend_on_the_gpu(causal, dtype, atol):
    """Every sparse head kind in one layer: the default (compiled FlexAttention) and the chunked kernel, both
    on the GPU, give the same outputs (bf16 inputs: fp32 softmax accumulation in flex) and fp32 gradients."""
    from seqattn.nn import AttentionConfig, MultiHeadAttention
    from seqattn.nn.backend import use_backend

    torch.manual_seed(0)
    config = AttentionConfig(
        num_heads=8,
        causal=causal,
        local=LocalHeads(heads=2, window_left=130, window_right=0 if causal else 7),
        routing=RoutingHeads(heads=1, shared_qk=causal, clusters=4, window=64),
        dilated=DilatedHeads(heads=1),
        global_tokens=GlobalTokenHeads(heads=1),
        block_routed=BlockRoutedHeads(heads=1, block=64),
    )
    layer = MultiHeadAttention(256, config).to(GPU).eval()
    x = torch.randn(2, 3001, 256, device=GPU)
    mask = None if causal else (torch.arange(3001, device=GPU)[None] >= torch.tensor([[3001], [2500]], device=GPU))
    results = []
    for backend in ("chunked", "flex"):
        layer.zero_grad()
        with use_backend(backend), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = layer(x, mask).out
        out.float().square().mean().backward()
        results.append((out.float(), [p.grad.float().clone() for p in layer.parameters()]))
    real = slice(None) if mask is None else ~mask
    torch.testing.assert_close(results[1][0][real], results[0][0][real], atol=atol, rtol=atol)
    if dtype == torch.float32:
        for got, want in zip(results[1][1], results[0][1]):
            scale = float(want.abs().max()) + 1e-6
            torch.testing.assert_close(got / scale, want / scale, atol=1e-3, rtol=1e-3)


def test_flex_local_attention_at_64k_tokens_uses_linear_memory():
    """+-128 at 64k tokens, bf16, 16 heads, forward and backward: the block mask is built without any N x N
    tensor and the fused kernel's peak memory stays far below one N x N score matrix (8 GiB in bf16)."""
    from seqattn.nn import local_attention

    n = 65536
    q, k, v = [torch.randn(1, 16, n, 64, device=GPU, dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]
    torch.cuda.reset_peak_memory_stats()
    local_attention(q, k, v, 128, 128).float().sum().backward()
    assert torch.cuda.max_memory_allocated() < 2 * 2**30
