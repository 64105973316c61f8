"""Block-routed (MoBA-style) heads against a dense, explicitly masked reference whose gate is written with plain
loops: outputs and gradients, odd lengths, padding, causal leaks, weights, multi-head mixes, cached generation."""
import pytest
import torch
from dense_reference import block_routed_allowed, masked_attention

from seqattn.nn import AttentionConfig, LayerCache, MultiHeadAttention
from seqattn.nn.block_routing import block_routed_attention
from seqattn.nn.heads import BlockRoutedHeads, LocalHeads, RoutingHeads


def _inputs(b, h, n, d, seed):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, d, dtype=torch.float64, generator=generator).requires_grad_()
                 for _ in range(3))


CASES = [  # n, block, top_k, causal, lengths
    (37, 8, 2, True, None),  # odd N, partial last block
    (64, 16, 1, True, [64, 41]),  # padding in the last blocks
    (50, 7, 3, False, [50, 29]),  # bidirectional, padding blocks never chosen
    (45, 8, 9, True, None),  # more blocks asked for than exist: all past blocks
    (30, 8, 0, False, None),  # own block only
    (5, 8, 2, True, None),  # shorter than one block
    (1, 4, 2, True, None),
]


@pytest.mark.parametrize("n,block,top_k,causal,lengths", CASES)
def test_block_routing_matches_dense_reference(n, block, top_k, causal, lengths):
    q, k, v = _inputs(2, 3, n, 8, seed=n + block)
    mask = None if lengths is None else torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]
    out = block_routed_attention(q, k, v, block, top_k, causal=causal, key_padding_mask=mask, tile=4)
    allowed = block_routed_allowed(q, k, block, top_k, mask, causal)
    ref, _ = masked_attention(q, k, v, allowed)
    real = torch.ones(2, n, dtype=torch.bool) if mask is None else ~mask
    rows = real[:, None].expand(-1, 3, -1)
    torch.testing.assert_close(out[rows], ref[rows], atol=1e-10, rtol=1e-10)
    grad = torch.randn_like(out) * real[:, None, :, None]  # padded queries' outputs are not used
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for name, a, b in zip("qkv", got, want):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9, msg=f"gradient of {name}")


def test_routed_blocks_are_beyond_the_own_block():
    """The test above would pass for own-block-only attention if the gate never chose: check that it does."""
    q, k, v = (x.detach() for x in _inputs(1, 2, 64, 8, seed=3))
    allowed = block_routed_allowed(q, k, 8, 2, None, True)
    assert int(allowed[..., 63, :56].sum()) == 2 * 2 * 8  # two past blocks of 8 for each head
    own_only = block_routed_attention(q, k, v, 8, 0, causal=True)
    routed = block_routed_attention(q, k, v, 8, 2, causal=True)
    assert (routed[:, :, 8:] - own_only[:, :, 8:]).abs().amax() > 1e-3
    torch.testing.assert_close(routed[:, :, :8], own_only[:, :, :8])  # block 0 has nothing to choose


def test_tile_size_does_not_change_results():
    q, k, v = (x.detach() for x in _inputs(2, 2, 77, 8, seed=5))
    outs = [block_routed_attention(q, k, v, 8, 3, causal=True, tile=t) for t in (1, 5, 64)]
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("block,top_k", [(8, 2), (5, 1)])
def test_causal_block_routing_does_not_leak(block, top_k):
    q, k, v = (x.detach() for x in _inputs(1, 2, 60, 8, seed=7))
    base = block_routed_attention(q, k, v, block, top_k, causal=True)
    for t in (0, 21, 40, 59):  # change every token after t: queries, keys and values
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        q2[:, :, t + 1:] += 2.0
        k2[:, :, t + 1:] -= 3.0
        v2[:, :, t + 1:] *= -1.0
        moved = block_routed_attention(q2, k2, v2, block, top_k, causal=True)
        torch.testing.assert_close(moved[:, :, : t + 1], base[:, :, : t + 1], atol=1e-12, rtol=0)


def test_half_precision_and_no_nan_for_all_padding():
    q, k, v = (x.detach().float() for x in _inputs(2, 2, 40, 16, seed=9))
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[1] = True  # a sequence of padding only
    out = block_routed_attention(q, k, v, 8, 2, causal=False, key_padding_mask=mask)
    assert torch.isfinite(out).all() and float(out[1].abs().max()) == 0.0
    ref = block_routed_attention(q.double(), k.double(), v.double(), 8, 2, causal=False, key_padding_mask=mask)
    half = block_routed_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 8, 2, causal=False,
                                  key_padding_mask=mask)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half[0].double(), ref[0], atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("causal", [True, False])
def test_weights_match_the_reference_probabilities(causal):
    q, k, v = (x.detach() for x in _inputs(1, 2, 29, 8, seed=11))
    mask = torch.arange(29)[None, :] >= 25
    out, weights = block_routed_attention(q, k, v, 6, 2, causal=causal, key_padding_mask=mask, return_weights=True)
    _, probs = masked_attention(q, k, v, block_routed_allowed(q, k, 6, 2, mask, causal))
    dense = weights.to_dense(29)
    torch.testing.assert_close(dense[:, :, :25], probs[:, :, :25], atol=1e-12, rtol=0)
    assert weights.kind == "block_routed"


def test_bad_arguments_are_named():
    q, k, v = (x.detach() for x in _inputs(1, 1, 8, 4, seed=0))
    with pytest.raises(ValueError, match="block"):
        block_routed_attention(q, k, v, 0, 1, causal=True)
    with pytest.raises(ValueError, match="top_k"):
        block_routed_attention(q, k, v, 4, -1, causal=True)
    with pytest.raises(ValueError, match="block_routed: block-routed heads need block >= 1"):
        AttentionConfig(num_heads=2, block_routed=BlockRoutedHeads(heads=1, block=0)).validate()


def _mixed_layer(causal: bool) -> MultiHeadAttention:
    torch.manual_seed(0)
    config = AttentionConfig(
        num_heads=4,
        causal=causal,
        local=LocalHeads(heads=1, window_left=5, window_right=0 if causal else 5),
        routing=RoutingHeads(heads=1, clusters=3, window=6),
        block_routed=BlockRoutedHeads(heads=2, block=6, top_k=2),
    )
    return MultiHeadAttention(32, config).double().eval()


def test_multihead_mix_runs_block_routed_heads_with_their_own_kernel():
    layer = _mixed_layer(causal=False)
    x = torch.randn(2, 41, 32, dtype=torch.float64)
    mask = torch.arange(41)[None, :] >= torch.tensor([[41], [30]])
    result = layer(x, mask, return_weights=True)
    q, k, v = layer.project(x)
    want = block_routed_attention(q[:, 2:], k[:, 2:], v[:, 2:], 6, 2, causal=False, key_padding_mask=mask)
    kinds = [w.kind for w in result.weights]
    assert kinds == ["local", "routing", "block_routed"]
    assert result.weights[2].heads == (2, 3)
    # the block-routed heads' slice of the output before the projection
    out = torch.linalg.solve(layer.out_proj.weight, (result.out - layer.out_proj.bias).transpose(1, 2)).transpose(1, 2)
    got = out.view(2, 41, 4, 8).transpose(1, 2)[:, 2:]
    real = (~mask)[:, None, :, None].expand_as(got)
    torch.testing.assert_close(got[real], want[real], atol=1e-9, rtol=1e-9)


def test_cached_generation_matches_the_forward_pass():
    layer = _mixed_layer(causal=True)
    x = torch.randn(2, 47, 32, dtype=torch.float64)
    full = layer(x).out
    cache = LayerCache()
    prompt = 13
    outs = [layer(x[:, :prompt], cache=cache).out]
    for t in range(prompt, 47):
        outs.append(layer.step(x[:, t : t + 1], cache))
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-10, rtol=1e-10)
