"""Dilated windows against the dense, explicitly masked reference: outputs, gradients, padding, causal."""
import pytest
import torch
from dense_reference import dilated_allowed, masked_attention

from seqattn.nn.dilated import dilated_attention


def _inputs(b, h, n, d):
    return tuple(torch.randn(b, h, n, d, dtype=torch.float64, requires_grad=True) for _ in range(3))


@pytest.mark.parametrize("n,left,right,dilation,lengths", [
    (37, 3, 3, 4, None),  # odd N, not a multiple of the dilation
    (50, 4, 0, 3, [50, 31]),  # causal, padding
    (9, 5, 5, 7, [9, 2]),  # reach beyond the sequence, one sequence of 2 tokens
    (64, 2, 1, 1, None),  # dilation 1 is a dense window
    (23, 0, 0, 5, None),  # self only
])
def test_dilated_matches_dense_reference(n, left, right, dilation, lengths):
    q, k, v = _inputs(2, 3, n, 8)
    mask = None
    if lengths is not None:
        mask = torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]
    out, (weights, keys) = dilated_attention(q, k, v, left, right, dilation, mask, return_weights=True)
    ref, probs = masked_attention(q, k, v, dilated_allowed(n, left, right, dilation, mask))
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    plain = dilated_attention(q, k, v, left, right, dilation, mask)
    grad = torch.randn_like(plain)
    got = torch.autograd.grad(plain, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # weights over the listed key positions equal the dense probabilities there
    dense = probs.gather(-1, keys.clamp(min=0)) * (keys >= 0)
    torch.testing.assert_close(weights, dense.detach(), atol=1e-12, rtol=0)


def test_causal_dilated_does_not_leak():
    q, k, v = (x.detach() for x in _inputs(1, 2, 40, 8))
    base = dilated_attention(q, k, v, 4, 0, 3)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 21:] += 3.0
    v2[:, :, 21:] -= 1.0
    torch.testing.assert_close(dilated_attention(q, k2, v2, 4, 0, 3)[:, :, :21], base[:, :, :21], atol=1e-12, rtol=0)


def test_bad_dilation_raises_value_error():
    q, k, v = _inputs(1, 1, 5, 4)
    with pytest.raises(ValueError, match="dilation"):
        dilated_attention(q, k, v, 1, 1, 0)
