"""The FlexAttention backend (the GPUs' path for the sparse heads), checked on the CPU against the dense,
explicitly masked reference: outputs and gradients, causal and bidirectional, padded, odd lengths, per-head
windows; and the block masks' tile lists, which the fused kernels trust, expanded tile by tile.

PyTorch has no CPU backward for FlexAttention, and refuses inputs that require grad there; its reference
implementation does differentiate, so the gradient tests lift that refusal for the test (the GPU runs the
fused backward: tests/test_cuda.py). The compiled CPU kernel, which does read the tile lists, runs forward."""
import warnings

import pytest
import torch
import torch.nn.attention.flex_attention as flex_api
from dense_reference import band_allowed, block_routed_allowed, dilated_allowed, masked_attention, padding_mask

from seqattn.nn import AttentionConfig, MultiHeadAttention, dilated_attention, local_attention
from seqattn.nn.backend import attention_backend, use_backend
from seqattn.nn.block_routing import block_routed_attention
from seqattn.nn.flex import TILE, band_block_mask, flex_band_attention, routed_block_mask
from seqattn.nn.local import banded_attention

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture
def flex_grad_on_cpu(monkeypatch):
    """Let PyTorch's reference FlexAttention differentiate on the CPU."""
    monkeypatch.setattr(flex_api, "_validate_device", lambda *tensors: None)


def _inputs(batch, heads, n, dim=16, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, dim, generator=generator, dtype=dtype).requires_grad_() for _ in range(3)]


def _compare(run, reference, inputs, valid_rows, atol=1e-9):
    """Outputs and gradients of ``run`` against ``reference`` on copies of ``inputs`` (real query rows only)."""
    grads = []
    outputs = []
    for fn in (run, reference):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        out = fn(*leaves)
        weight = torch.linspace(-1, 1, out.shape[-2], dtype=out.dtype)[:, None]
        (out * valid_rows * weight).square().sum().backward()
        outputs.append(out.detach() * valid_rows)
        grads.append([t.grad for t in leaves])
    torch.testing.assert_close(outputs[0], outputs[1], atol=atol, rtol=atol)
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=atol * 10, rtol=atol * 10)


@pytest.mark.parametrize("n, left, right, lengths", [(301, 17, 17, None), (257, 40, 0, None), (333, 130, 7, [333, 250]),
                                                     (129, 3, 200, [100, 129]), (1, 4, 4, None)])
def test_flex_local_attention_matches_the_dense_reference(flex_grad_on_cpu, n, left, right, lengths):
    mask = None if lengths is None else padding_mask(2, n, lengths)
    valid = torch.ones(2, 1, n, 1, dtype=torch.float64) if mask is None else (~mask)[:, None, :, None].double()
    inputs = _inputs(2, 3, n)

    def run(q, k, v):
        with use_backend("flex"):
            return local_attention(q, k, v, left, right, mask)

    _compare(run, lambda q, k, v: masked_attention(q, k, v, band_allowed(n, left, right, mask))[0], inputs, valid)


def test_flex_per_head_windows_match_the_dense_reference(flex_grad_on_cpu):
    n, windows = 283, [(16, 16), (3, 0), (140, 2), (16, 16)]
    mask = padding_mask(2, n, [283, 201])
    valid = (~mask)[:, None, :, None].double()
    inputs = _inputs(2, 4, n)

    def run(q, k, v):
        with use_backend("flex"):
            return local_attention(q, k, v, [w[0] for w in windows], [w[1] for w in windows], mask)

    def reference(q, k, v):
        heads = [masked_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], band_allowed(n, *w, mask))[0]
                 for h, w in enumerate(windows)]
        return torch.cat(heads, dim=1)

    _compare(run, reference, inputs, valid)


@pytest.mark.parametrize("causal", [True, False])
def test_flex_dilated_attention_matches_the_dense_reference(flex_grad_on_cpu, causal):
    n, left, right, dilation = 211, 6, 0 if causal else 6, 3
    mask = None if causal else padding_mask(2, n, [211, 150])
    valid = torch.ones(2, 1, n, 1, dtype=torch.float64) if mask is None else (~mask)[:, None, :, None].double()

    def run(q, k, v):
        with use_backend("flex"):
            return dilated_attention(q, k, v, left, right, dilation, mask)

    reference = lambda q, k, v: masked_attention(q, k, v, dilated_allowed(n, left, right, dilation, mask))[0]
    _compare(run, reference, _inputs(2, 2, n), valid)


def test_flex_segmented_band_with_self_bias_and_lse_matches_the_chunked_kernel(flex_grad_on_cpu):
    """Causal routing's form: a band over sorted tokens, same-segment keys only, a self-score bias, and the
    differentiable log-sum-exp that global heads merge with (the chunked kernel is the reference here)."""
    n, window = 300, 19
    generator = torch.Generator().manual_seed(1)
    segments = torch.sort(torch.randint(0, 5, (2, 3, n), generator=generator), dim=-1).values
    valid = torch.rand(2, 3, n, generator=generator) > 0.1
    inputs = _inputs(2, 3, n)
    lse_weight = torch.linspace(0, 1, n, dtype=torch.float64)

    def both(fn):
        def run(q, k, v):
            out, lse = fn(q, k, v, window, 0, valid, segments=segments, scale=0.3, self_bias=-2.0, return_lse=True)
            return out + (lse * lse_weight)[..., None]  # gradients through both outputs
        return run

    _compare(both(flex_band_attention), both(banded_attention), inputs, torch.ones(1, 1, n, 1, dtype=torch.float64))


@pytest.mark.parametrize("causal", [True, False])
def test_flex_block_routed_attention_matches_the_dense_reference(flex_grad_on_cpu, causal):
    n, block, top_k = 301, 32, 2
    mask = None if causal else padding_mask(2, n, [301, 230])
    valid = torch.ones(2, 1, n, 1, dtype=torch.float64) if mask is None else (~mask)[:, None, :, None].double()
    inputs = _inputs(2, 2, n)
    allowed = block_routed_allowed(*[t.detach() for t in inputs[:2]], block, top_k, mask, causal=causal)

    def run(q, k, v):
        with use_backend("flex"):
            return block_routed_attention(q, k, v, block, top_k, causal=causal, key_padding_mask=mask)

    _compare(run, lambda q, k, v: masked_attention(q, k, v, allowed)[0], inputs, valid)


@pytest.mark.parametrize("config", [
    dict(causal=False, local=dict(heads=2, window_left=20, window_right=20), routing=dict(heads=1),
         dilated=dict(heads=1), global_tokens=dict(heads=1), block_routed=dict(heads=1)),
    dict(causal=True, local=dict(heads=2, window_left=20, window_right=0), routing=dict(heads=1, shared_qk=True),
         dilated=dict(heads=1), global_tokens=dict(heads=1), block_routed=dict(heads=1)),
], ids=["bidirectional", "causal"])
def test_every_sparse_head_kind_gives_the_same_layer_on_both_backends(flex_grad_on_cpu, config):
    """A layer of every sparse kind (local, routed, dilated, global, block-routed, plus full heads): the flex
    backend's outputs and parameter gradients equal the chunked backend's."""
    torch.manual_seed(0)
    sections = dict(routing=dict(clusters=4, window=16), dilated=dict(dilation=2, window=5),
                    global_tokens=dict(window=9), block_routed=dict(block=24))
    for name, values in config.items():
        sections[name] = {**sections.get(name, {}), **values} if isinstance(values, dict) else values
    layer = MultiHeadAttention(64, AttentionConfig(num_heads=8).replace(**sections)).double().eval()
    x = torch.randn(2, 203, 64, dtype=torch.float64)
    mask = None if config["causal"] else padding_mask(2, 203, [203, 150])
    results = []
    for backend in ("chunked", "flex"):
        layer.zero_grad()
        with use_backend(backend):
            out = layer(x, mask).out
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in layer.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-9, rtol=1e-9)
    for got, want in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-8)


def _expand_tiles(num, indices, n):
    """(B, H, N, N) bool: the positions that the tile lists (B, H, nq) / (B, H, nq, M) cover."""
    batch, heads, rows = num.shape
    covered = torch.zeros(batch, heads, rows * TILE, rows * TILE, dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):
            for t in range(rows):
                for j in indices[b, h, t, : int(num[b, h, t])].tolist():
                    covered[b, h, t * TILE : (t + 1) * TILE, j * TILE : (j + 1) * TILE] = True
    return covered[..., :n, :n]


def _check_tiles(block_mask, allowed, n):
    """Full tiles must be wholly allowed, nothing allowed may lie outside the listed tiles, and inside the
    partial tiles the mask_mod must give exactly the allowed positions."""
    full = _expand_tiles(block_mask.full_kv_num_blocks, block_mask.full_kv_indices, n) \
        if block_mask.full_kv_num_blocks is not None else torch.zeros_like(allowed)
    partial = _expand_tiles(block_mask.kv_num_blocks, block_mask.kv_indices, n)
    full, partial = torch.broadcast_tensors(full, partial)
    allowed = allowed.expand_as(full)
    assert not (full & partial).any(), "a tile is listed as both full and partial"
    assert allowed[full].all(), "a full tile holds a position the pattern does not allow"
    assert not (allowed & ~(full | partial)).any(), "an allowed position lies in no listed tile"
    b, h, i, j = torch.meshgrid(*[torch.arange(s) for s in allowed.shape], indexing="ij")
    head = h if block_mask.kv_num_blocks.shape[1] > 1 else torch.zeros_like(h)
    by_mod = block_mask.mask_mod(b, head, i, j)
    assert torch.equal(by_mod[partial], allowed[partial])


@pytest.mark.parametrize("n, left, right, lengths", [(700, 130, 7, [700, 555]), (512, 256, 0, [512, 384]),
                                                     (300, 0, 0, None), (1000, 300, 300, [1000, 1000])])
def test_band_tiles_cover_exactly_the_band(n, left, right, lengths):
    mask = torch.zeros(2, n, dtype=torch.bool) if lengths is None else padding_mask(2, n, lengths)
    key_valid = (~mask)[:, None].expand(2, 3, n)
    block_mask = band_block_mask(n, left, right, key_valid)
    assert block_mask.kv_num_blocks.shape[1] == 1  # the same keys in every head: one mask for all
    if lengths == [1000, 1000]:  # an unpadded interior must use full tiles (where the kernel skips the mask)
        assert int(block_mask.full_kv_num_blocks.sum()) > 0
    _check_tiles(block_mask, band_allowed(n, left, right, mask).expand(2, 1, n, n), n)


def test_segmented_band_tiles_cover_exactly_the_pattern():
    n = 400
    generator = torch.Generator().manual_seed(3)
    segments = torch.sort(torch.randint(0, 4, (1, 2, n), generator=generator), dim=-1).values
    valid = torch.rand(1, 2, n, generator=generator) > 0.2
    block_mask = band_block_mask(n, 150, 0, valid, segments)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = (j <= i) & (j >= i - 150) & valid[:, :, None, :] & (segments[..., :, None] == segments[..., None, :])
    _check_tiles(block_mask, allowed, n)


@pytest.mark.parametrize("causal", [True, False])
def test_block_routing_tiles_cover_exactly_the_pattern(causal):
    n, block = 600, 48
    q, k = _inputs(1, 2, n)[:2]
    mask = padding_mask(1, n, [530])
    key_valid = (~mask)[:, None].expand(1, 2, n)
    from seqattn.nn.block_routing import block_means, choose_blocks

    means, has_keys = block_means(k.detach(), key_valid, block)
    chosen, chosen_ok = choose_blocks(q.detach(), means, has_keys, block, 3, causal)
    block_mask = routed_block_mask(n, block, causal, key_valid, chosen, chosen_ok)
    _check_tiles(block_mask, block_routed_allowed(q.detach(), k.detach(), block, 3, mask, causal=causal), n)


def test_compiled_flex_kernel_reads_the_tiles_as_the_chunked_kernel_does():
    """The fused (compiled) CPU FlexAttention kernel, which skips unlisted tiles and the mask in full ones,
    gives the chunked kernel's output on padded bands that have full, partial and skipped tiles, at three
    lengths through one compiled function (as the library compiles it: the shapes turn dynamic)."""
    from torch.nn.attention.flex_attention import flex_attention

    compiled = torch.compile(flex_attention)
    for n, lengths in ((777, [777, 600]), (901, [901, 900]), (1203, [1000, 1203])):
        q, k, v = [t.detach().float() for t in _inputs(2, 2, n, seed=n)]
        key_valid = (~padding_mask(2, n, lengths))[:, None].expand(2, 2, n)
        block_mask = band_block_mask(n, 130, 7, key_valid)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = compiled(q, k, v, block_mask=block_mask, scale=0.25)
        reference = banded_attention(q, k, v, 130, 7, key_valid, scale=0.25)
        real = key_valid[..., None]
        torch.testing.assert_close(out * real, reference * real, atol=2e-5, rtol=2e-5)


def test_backend_is_chosen_by_device_and_can_be_forced(monkeypatch):
    assert attention_backend(torch.device("cpu")) == "chunked"
    assert attention_backend(torch.device("cuda", 0)) == "flex"
    with use_backend("flex"):
        assert attention_backend(torch.device("cpu")) == "flex"
    monkeypatch.setenv("SEQATTN_ATTENTION_BACKEND", "chunked")
    assert attention_backend(torch.device("cuda", 0)) == "chunked"
    monkeypatch.setenv("SEQATTN_ATTENTION_BACKEND", "triton")
    with pytest.raises(ValueError, match="attention backend must be one of auto, flex, chunked"):
        attention_backend(torch.device("cpu"))


def test_flex_bf16_inputs_accumulate_the_softmax_in_float32():
    """bf16 queries, keys and values through the flex path: the output is the float64 attention of those same
    bf16 inputs, rounded once to bf16 (measured: error = the rounding alone, where a softmax and sum carried
    out in bf16 is about 6x further off)."""
    n, left, right = 600, 200, 200
    q, k, v = [t.detach().bfloat16() for t in _inputs(1, 4, n, dim=32, seed=7)]
    reference = masked_attention(q.double(), k.double(), v.double(), band_allowed(n, left, right))[0]
    with use_backend("flex"):
        out = local_attention(q, k, v, left, right)
    assert out.dtype == torch.bfloat16
    error = (out.double() - reference).abs().max().item()
    rounding = (reference.bfloat16().double() - reference).abs().max().item()  # rounding the result alone
    assert error <= 2 * rounding, (error, rounding)
