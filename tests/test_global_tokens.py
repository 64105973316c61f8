"""Global tokens (a band plus pooled summary tokens) against the dense, explicitly masked reference:
outputs, gradients (queries included), padding, odd lengths, causal blocks, leaks, weights."""
import pytest
import torch
from dense_reference import global_reference

from seqattn.nn.global_tokens import global_token_attention


def _inputs(b, h, n, d):
    return tuple(torch.randn(b, h, n, d, dtype=torch.float64, requires_grad=True) for _ in range(3))


CASES = [  # n, left, right, tokens, learned, causal, block, lengths
    (37, 4, 4, 3, True, False, 64, None),  # odd N, learned pooling
    (41, 3, 2, 4, False, False, 64, [41, 23]),  # mean pooling into segments, padding
    (50, 6, 0, 2, True, True, 8, [50, 29]),  # causal blocks, padding
    (33, 5, 0, 1, False, True, 7, None),  # causal mean of the past blocks, N not a multiple of the block
    (6, 2, 2, 8, False, False, 64, [6, 3]),  # more segments than real tokens: empty summaries
    (20, 30, 30, 2, True, False, 64, None),  # window wider than the sequence
]


@pytest.mark.parametrize("n,left,right,tokens,learned,causal,block,lengths", CASES)
def test_global_tokens_match_dense_reference(n, left, right, tokens, learned, causal, block, lengths):
    torch.manual_seed(n)
    q, k, v = _inputs(2, 3, n, 8)
    queries = torch.randn(3, tokens, 8, dtype=torch.float64, requires_grad=True) if learned else None
    mask = None if lengths is None else torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]
    out = global_token_attention(q, k, v, left, right, mask, tokens=tokens, queries=queries, causal=causal,
                                 block=block)
    ref, _ = global_reference(q, k, v, left, right, mask, tokens=tokens, queries=queries, causal=causal,
                              block=block)
    real = torch.ones(2, n, dtype=torch.bool) if mask is None else ~mask
    torch.testing.assert_close(out[real[:, None].expand(-1, 3, -1)], ref[real[:, None].expand(-1, 3, -1)],
                               atol=1e-10, rtol=1e-10)
    grad = torch.randn_like(out) * real[:, None, :, None]  # padded queries' outputs are not used
    inputs = (q, k, v) + ((queries,) if learned else ())
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(ref, inputs, grad)
    for name, a, b in zip("qkvu", got, want):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9, msg=f"gradient of {name}")


def test_causal_global_tokens_do_not_leak():
    q, k, v = (x.detach() for x in _inputs(1, 2, 60, 8))
    queries = torch.randn(2, 3, 8, dtype=torch.float64)
    base = global_token_attention(q, k, v, 5, 0, tokens=3, queries=queries, causal=True, block=8)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 27:] += 3.0
    v2[:, :, 27:] -= 1.0
    moved = global_token_attention(q, k2, v2, 5, 0, tokens=3, queries=queries, causal=True, block=8)
    torch.testing.assert_close(moved[:, :, :27], base[:, :, :27], atol=1e-12, rtol=0)
    assert not torch.allclose(moved[:, :, 27:], base[:, :, 27:])


def test_summaries_reach_beyond_the_window():
    """A key far outside every band still moves every query's output through the summaries."""
    q, k, v = (x.detach() for x in _inputs(1, 1, 64, 8))
    queries = torch.randn(1, 2, 8, dtype=torch.float64)
    base = global_token_attention(q, k, v, 2, 2, tokens=2, queries=queries)
    v2 = v.clone()
    v2[:, :, 0] += 5.0
    moved = global_token_attention(q, k, v2, 2, 2, tokens=2, queries=queries)
    assert bool((moved[:, :, 10:] - base[:, :, 10:]).abs().amax(-1).gt(1e-6).all())


def test_global_weights_cover_band_and_summaries():
    q, k, v = (x.detach() for x in _inputs(2, 2, 30, 8))
    mask = torch.arange(30)[None, :] >= torch.tensor([30, 17])[:, None]
    queries = torch.randn(2, 2, 8, dtype=torch.float64)
    out, weights = global_token_attention(q, k, v, 3, 3, mask, tokens=2, queries=queries, return_weights=True)
    _, probs = global_reference(q, k, v, 3, 3, mask, tokens=2, queries=queries)
    real = ~mask[:, None, :].expand(-1, 2, -1)
    totals = weights.weights.sum(-1)
    torch.testing.assert_close(totals[real], torch.ones_like(totals[real]))
    # summary slots carry exactly the reference's summary probabilities
    torch.testing.assert_close(weights.weights[..., -2:][real], probs[..., 30:][real], atol=1e-12, rtol=0)
    keys = weights.key_positions()
    assert bool((keys[..., -2:][real] >= 0).all()) and bool((keys[..., -2:] < 30).all())


@pytest.mark.parametrize("kwargs,match", [
    (dict(tokens=0), "tokens"),
    (dict(tokens=2, causal=True), "causal mean pooling"),
    (dict(tokens=1, causal=True, right=2), "window_right=0"),
    (dict(tokens=2, queries=torch.zeros(1, 3, 4)), "queries must be"),
])
def test_bad_global_arguments_raise_value_error(kwargs, match):
    q, k, v = (x.detach() for x in _inputs(1, 1, 9, 4))
    right = kwargs.pop("right", 0)
    with pytest.raises(ValueError, match=match):
        global_token_attention(q, k, v, 2, right, **kwargs)
