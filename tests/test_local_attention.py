"""seqattn.nn.local_attention against a dense, explicitly masked reference."""
import subprocess
import sys
import textwrap

import pytest
import torch
from dense_reference import band_allowed, masked_attention, padding_mask
from hypothesis import given, settings
from hypothesis import strategies as st

from seqattn.nn import local_attention


def _inputs(b, h, n, d, dtype=torch.float64, dv=None):
    q, k = (torch.randn(b, h, n, d, dtype=dtype, requires_grad=True) for _ in range(2))
    v = torch.randn(b, h, n, dv or d, dtype=dtype, requires_grad=True)
    return q, k, v


def _compare(q, k, v, left, right, mask=None, atol=1e-10, block_size=None):
    out = local_attention(q, k, v, left, right, mask, block_size=block_size)
    ref, _ = masked_attention(q, k, v, band_allowed(q.shape[2], left, right, mask))
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    torch.testing.assert_close(out, ref, atol=atol, rtol=atol)
    for g, w, name in zip(got, want, "qkv"):
        torch.testing.assert_close(g, w, atol=atol, rtol=atol, msg=lambda m, name=name: f"grad {name}: {m}")


CASES = [
    # (B, H, N, D, left, right, block_size)
    (2, 3, 37, 8, 5, 3, None),  # odd N, asymmetric bidirectional
    (2, 3, 37, 8, 5, 0, 4),  # causal, small blocks
    (1, 2, 1, 4, 10, 10, None),  # N = 1
    (2, 2, 7, 4, 64, 64, None),  # N smaller than the window
    (2, 2, 50, 4, 0, 0, None),  # window of 0: self only
    (2, 2, 50, 4, 0, 6, None),  # anti-causal
    (2, 2, 200, 8, 64, 64, None),  # several blocks
    (1, 2, 131, 8, 70, 3, 16),  # window wider than a block, odd N
    (2, 1, 129, 8, 256, 0, None),  # causal window longer than N
]


@pytest.mark.parametrize("b,h,n,d,left,right,block", CASES)
def test_matches_dense_reference(b, h, n, d, left, right, block):
    _compare(*_inputs(b, h, n, d), left, right, block_size=block)


@pytest.mark.parametrize("b,h,n,d,left,right,block", CASES)
def test_matches_dense_reference_with_padding(b, h, n, d, left, right, block):
    # padding in the middle of the batch: the first sequence is full, the others are shorter
    lengths = [n] + [max(1, n - 3 * (i + 1)) for i in range(b - 1)]
    _compare(*_inputs(b, h, n, d), left, right, padding_mask(b, n, lengths), block_size=block)


def test_value_dim_may_differ():
    _compare(*_inputs(2, 2, 33, 8, dv=5), 4, 2)


def test_float32_tolerance():
    q, k, v = (x.detach().float().requires_grad_() for x in _inputs(2, 4, 300, 32))
    _compare(q, k, v, 40, 40, padding_mask(2, 300, [300, 177]), atol=2e-5)


def test_bfloat16_tolerance():
    q, k, v = _inputs(2, 2, 97, 16, dtype=torch.float32)
    mask = padding_mask(2, 97, [97, 60])
    out = local_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 8, 8, mask)
    assert out.dtype == torch.bfloat16
    ref, _ = masked_attention(q, k, v, band_allowed(97, 8, 8, mask))
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out.float(), (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=6e-2, rtol=6e-2)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 3),
    n=st.integers(1, 70),
    d=st.sampled_from([1, 3, 8]),
    left=st.integers(0, 40),
    right=st.integers(0, 40),
    block=st.one_of(st.none(), st.integers(1, 33)),
    data=st.data(),
)
def test_property_random_shapes(b, h, n, d, left, right, block, data):
    lengths = [data.draw(st.integers(0, n)) for _ in range(b)]
    _compare(*_inputs(b, h, n, d), left, right, padding_mask(b, n, lengths), block_size=block)


def test_gradcheck_float64():
    q, k, v = _inputs(1, 2, 11, 3)
    mask = padding_mask(1, 11, [9])
    assert torch.autograd.gradcheck(lambda a, b, c: local_attention(a, b, c, 3, 2, mask, block_size=4), (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: local_attention(a, b, c, 4, 0), (q, k, v))


@pytest.mark.parametrize("left", [0, 3, 17, 100])
def test_causal_no_leak(left):
    q, k, v = (x.detach() for x in _inputs(2, 2, 60, 8))
    t = 29
    out = local_attention(q, k, v, left, 0)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, t + 1 :] = torch.randn_like(x[:, :, t + 1 :]) * 100
    out2 = local_attention(q2, k2, v2, left, 0)
    torch.testing.assert_close(out[:, :, : t + 1], out2[:, :, : t + 1], atol=0, rtol=0)
    assert not torch.allclose(out[:, :, t + 1 :], out2[:, :, t + 1 :])
    # and no gradient flows from the past outputs into future inputs
    q, k, v = _inputs(1, 1, 60, 8)
    local_attention(q, k, v, left, 0)[:, :, : t + 1].sum().backward()
    for x in (q, k, v):
        assert x.grad[:, :, t + 1 :].abs().max() == 0


def test_padded_batch_equals_single_runs():
    lengths = [50, 31, 7]
    q, k, v = (x.detach() for x in _inputs(3, 2, 50, 8))
    mask = padding_mask(3, 50, lengths)
    batched = local_attention(q, k, v, 6, 4, mask)
    for i, length in enumerate(lengths):
        alone = local_attention(q[i : i + 1, :, :length], k[i : i + 1, :, :length], v[i : i + 1, :, :length], 6, 4)
        torch.testing.assert_close(batched[i : i + 1, :, :length], alone, atol=1e-12, rtol=1e-12)


def test_rows_without_keys_are_zero_not_nan():
    q, k, v = _inputs(2, 1, 20, 4)
    mask = padding_mask(2, 20, [20, 0])  # the second sequence is all padding
    mask[0, :5] = True  # causal queries 0..4 of the first sequence see only padding
    out = local_attention(q, k, v, 3, 0, mask)
    assert torch.isfinite(out).all()
    assert out[1].abs().max() == 0
    assert out[0, :, :5].abs().max() == 0
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


def test_zero_length():
    q, k, v = _inputs(2, 2, 0, 4)
    assert local_attention(q, k, v, 3, 3).shape == (2, 2, 0, 4)


def test_block_size_does_not_change_result():
    q, k, v = (x.detach() for x in _inputs(1, 2, 300, 8))
    outs = [local_attention(q, k, v, 37, 11, block_size=b) for b in (None, 1, 7, 64, 300)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-12, rtol=1e-12)


def test_banded_weights_match_dense_probs():
    q, k, v = (x.detach() for x in _inputs(2, 2, 45, 8))
    mask = padding_mask(2, 45, [45, 30])
    left, right = 6, 3
    out, band = local_attention(q, k, v, left, right, mask, return_weights=True)
    assert band.shape == (2, 2, 45, left + right + 1)
    _, probs = masked_attention(q, k, v, band_allowed(45, left, right, mask))
    for i in range(45):
        for o in range(left + right + 1):
            j = i - left + o
            want = probs[..., i, j] if 0 <= j < 45 else torch.zeros_like(band[..., i, o])
            torch.testing.assert_close(band[..., i, o], want, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(window_left=-1, window_right=0), "window_left"),
        (dict(window_left=2, window_right=-3), "window_right"),
        (dict(window_left=2.5, window_right=0), "window_left"),
        (dict(window_left=2, window_right=0, block_size=0), "block_size"),
    ],
)
def test_bad_windows_raise_value_error(kwargs, name):
    q, k, v = _inputs(1, 1, 5, 4)
    with pytest.raises(ValueError, match=name):
        local_attention(q, k, v, **kwargs)


def test_bad_shapes_and_masks_raise_value_error():
    q, k, v = _inputs(2, 1, 5, 4)
    with pytest.raises(ValueError, match="q and k"):
        local_attention(q, k[:, :, :4], v, 1, 1)
    with pytest.raises(ValueError, match="v must match"):
        local_attention(q, k, v[:, :, :3], 1, 1)
    with pytest.raises(ValueError, match="q must have shape"):
        local_attention(q[0], k, v, 1, 1)
    with pytest.raises(ValueError, match="key_padding_mask must have dtype"):
        local_attention(q, k, v, 1, 1, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        local_attention(q, k, v, 1, 1, torch.zeros(2, 4, dtype=torch.bool))


def test_memory_is_linear_in_length():
    """At N = 200k a single N x N fp32 matrix would need 160 GB; the kernel must stay far below 2 GB."""
    script = textwrap.dedent(
        """
        import resource, torch
        from seqattn.nn import local_attention
        torch.set_num_threads(1)
        n = 200_000
        q, k, v = (torch.randn(1, 1, n, 8, requires_grad=True) for _ in range(3))
        local_attention(q, k, v, 64, 64).sum().backward()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    peak_kib = int(result.stdout.strip().splitlines()[-1])
    assert peak_kib < 2 * 1024 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


def _per_head_reference(q, k, v, lefts, rights, mask=None):
    """Each head through the dense reference with its own band."""
    outs = [masked_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1],
                             band_allowed(q.shape[2], lefts[h], rights[h], mask))[0] for h in range(q.shape[1])]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("n,lefts,rights,lengths", [
    (37, [5, 1, 5, 12], [3, 0, 3, 12], None),  # two heads share a window, odd N
    (101, [40, 2, 0, 17], [0, 0, 0, 0], [101, 60]),  # causal heads of four widths, padding
    (9, [64, 3, 0, 8], [64, 2, 1, 0], [9, 4]),  # windows wider than N beside narrow ones
])
def test_per_head_windows_match_the_dense_reference(n, lefts, rights, lengths):
    q, k, v = _inputs(2, 4, n, 8)
    mask = None if lengths is None else padding_mask(2, n, lengths)
    out = local_attention(q, k, v, lefts, rights, mask)
    ref = _per_head_reference(q, k, v, lefts, rights, mask)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    grad = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(ref, (q, k, v), grad)):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    # the banded weights of every head use the widest left extent as their column origin
    _, band = local_attention(q.detach(), k.detach(), v.detach(), lefts, rights, mask, return_weights=True)
    assert band.shape == (2, 4, n, max(lefts) + max(rights) + 1)
    for h in range(4):
        _, probs = masked_attention(q[:, h : h + 1].detach(), k[:, h : h + 1].detach(), v[:, h : h + 1].detach(),
                                    band_allowed(n, lefts[h], rights[h], mask))
        i = torch.arange(n)[:, None]
        j = i - max(lefts) + torch.arange(band.shape[-1])[None, :]
        inside = (j >= 0) & (j < n)
        want = torch.where(inside, probs[:, 0].gather(-1, j.clamp(0, n - 1).expand(2, -1, -1)), 0.0)
        torch.testing.assert_close(band[:, h], want, atol=1e-12, rtol=0)


def test_per_head_causal_windows_do_not_leak():
    q, k, v = (x.detach() for x in _inputs(1, 3, 60, 8))
    base = local_attention(q, k, v, [9, 2, 30], [0, 0, 0])
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 31:] += 4.0
    v2[:, :, 31:] -= 2.0
    changed = local_attention(q, k2, v2, [9, 2, 30], [0, 0, 0])
    torch.testing.assert_close(changed[:, :, :31], base[:, :, :31], atol=1e-12, rtol=0)
    assert not torch.allclose(changed[:, :, 31:], base[:, :, 31:])


@pytest.mark.parametrize("kwargs,match", [
    (dict(window_left=[1, 2], window_right=0), r"one window per head \(3\)"),
    (dict(window_left=[1, -2, 3], window_right=0), r"window_left\[1\] must be >= 0"),
    (dict(window_left=[1, 2, 3], window_right=[0, 0, 0.5]), r"window_right\[2\]"),
])
def test_bad_per_head_windows_raise_value_error(kwargs, match):
    q, k, v = _inputs(1, 3, 5, 4)
    with pytest.raises(ValueError, match=match):
        local_attention(q, k, v, **kwargs)


def test_a_blocks_key_window_follows_the_window_not_whole_blocks():
    """Each query block multiplies exactly b + L + R keys, so narrowing a head always removes work (+-30 does
    not touch the key blocks of +-64), and the backward folds over ceil(W / b) slots."""
    from seqattn.nn.local import make_layout

    for left, right, block in ((30, 30, 64), (64, 64, 64), (8, 8, 16), (5, 0, 4), (70, 3, 16)):
        layout = make_layout(1 << 16, left, right, block)
        assert layout.window == block + left + right
        assert layout.slots == -(-(block + left + right) // block)
    assert make_layout(1 << 16, 30, 30, 64).window < make_layout(1 << 16, 64, 64, 64).window
