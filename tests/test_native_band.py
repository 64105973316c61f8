"""The fused CPU band kernel (seqattn.nn.native_band) against the dense masked reference and the blocked kernel."""
import os
import shutil
from pathlib import Path

import pytest
import torch
from dense_reference import band_allowed, masked_attention, padding_mask

from seqattn.nn import local_attention, native_band
from seqattn.nn.local import banded_attention

pytestmark = pytest.mark.skipif(native_band._library() is None,
                                reason="the fused kernel could not be built here (no C compiler, or SEQATTN_NATIVE=0)")


def _qkv(b, h, n, d, dv=None, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, h, n, d, dtype=dtype, generator=generator).requires_grad_() for _ in range(2))
    v = torch.randn(b, h, n, dv or d, dtype=dtype, generator=generator).requires_grad_()
    return q, k, v


def _grads(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


CASES = [
    # (B, H, N, D, Dv, left, right): odd lengths, causal, one-sided, heads of 8-lane multiples and not, long rows
    (2, 3, 37, 16, 16, 5, 5),
    (1, 1, 1, 8, 8, 3, 0),
    (2, 2, 50, 13, 13, 7, 0),
    (1, 2, 70, 64, 64, 32, 32),
    (3, 1, 9, 5, 7, 0, 4),
    (1, 1, 40, 72, 72, 3, 9),
    (2, 2, 129, 64, 24, 128, 0),
    (1, 3, 33, 20, 20, 0, 0),
]


@pytest.mark.parametrize("b,h,n,d,dv,left,right", CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_matches_the_dense_reference_with_padding(b, h, n, d, dv, left, right, dtype, tol):
    q, k, v = _qkv(b, h, n, d, dv, dtype)
    mask = padding_mask(b, n, [max(1, n - 3 * row) for row in range(b)])
    valid = (~mask)[:, None].expand(b, h, n)
    out = native_band.native_band_attention(q, k, v, left, right, valid, scale=d**-0.5)
    # the reference in float64 whatever the input type: float32 is then checked against the exact answer
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref, _ = masked_attention(q64, k64, v64, band_allowed(n, left, right, mask))
    grad = torch.randn(ref.shape, dtype=torch.float64)
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)
    for got, want, name in zip(_grads(out, (q, k, v), grad.to(dtype)), _grads(ref, (q64, k64, v64), grad), "qkv"):
        torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("n,left,right", [(45, 6, 6), (64, 17, 0), (31, 0, 9)])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 2e-5)])
def test_per_head_validity_self_bias_and_lse_match_the_blocked_kernel(n, left, right, dtype, tol):
    """Everything banded_attention takes besides segments: a validity per head, a self-score bias, and the
    differentiable log-sum-exp, against the blocked kernel (itself tested against the dense reference)."""
    b, h, d = 2, 3, 16
    q, k, v = _qkv(b, h, n, d, dtype=dtype)
    valid = torch.rand(b, h, n, generator=torch.Generator().manual_seed(1)) > 0.3
    valid[1, 2] = False  # a whole head with no key: zeros, the masking lse, no gradient
    kwargs = dict(scale=0.3, self_bias=1.5, return_lse=True)
    out, lse = native_band.native_band_attention(q, k, v, left, right, valid, **kwargs)
    ref_out, ref_lse = banded_attention(q, k, v, left, right, valid, block_size=8, **kwargs)
    torch.testing.assert_close(out, ref_out, atol=tol, rtol=tol)
    torch.testing.assert_close(lse, ref_lse, atol=tol, rtol=tol)
    assert bool((out[1, 2] == 0).all()) and bool((lse[1, 2] == torch.finfo(dtype).min / 2).all())
    grad_out, grad_lse = torch.randn_like(out), torch.randn_like(lse)
    got = torch.autograd.grad((out * grad_out).sum() + (lse * grad_lse).sum(), (q, k, v))
    want = torch.autograd.grad((ref_out * grad_out).sum() + (ref_lse * grad_lse).sum(), (q, k, v))
    for g, w, name in zip(got, want, "qkv"):
        torch.testing.assert_close(g, w, atol=tol, rtol=tol, msg=lambda m, name=name: f"grad {name}: {m}")
    assert bool((got[0][1, 2] == 0).all())


def test_local_attention_dispatches_narrow_cpu_windows_here_and_wide_ones_to_the_blocked_kernel(monkeypatch):
    calls = []
    original = native_band.native_band_attention
    monkeypatch.setattr(
        native_band, "native_band_attention", lambda *a, **kw: calls.append(a[3:5]) or original(*a, **kw)
    )
    q, k, v = _qkv(1, 2, 300, 8)
    local_attention(q, k, v, 16, 16)
    local_attention(q, k, v, [4, 128], [4, 0])  # per-head windows: one fused call per window
    local_attention(q, k, v, 200, 200)  # wider than MAX_NATIVE_WINDOW
    local_attention(q, k, v, 16, 16, block_size=32)  # a block size asks for the blocked kernel
    local_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 16, 16)  # half types: blocked
    assert calls == [(16, 16), (4, 4), (128, 0)]


def test_causal_windows_do_not_leak():
    q, k, v = _qkv(1, 2, 60, 8)
    out = native_band.native_band_attention(q, k, v, 9, 0, torch.ones(1, 2, 60, dtype=torch.bool), scale=0.35)
    for t in (0, 17, 59):
        grads = torch.autograd.grad(out[:, :, t].sum(), (q, k, v), retain_graph=True)
        for grad, name in zip(grads, "qkv"):
            assert bool((grad[:, :, t + 1 :] == 0).all()), f"output {t} depends on {name} after it"
            assert bool((grad[:, :, : max(0, t - 9)] == 0).all()), f"output {t} depends on {name} before its window"


def test_thread_count_and_row_splitting_do_not_change_a_bit():
    """Rows are cut into pieces when there are fewer rows than threads; every query and key is computed by
    the same loop either way, so the results must be identical, not merely close."""
    q, k, v = _qkv(1, 1, 257, 24, dtype=torch.float32)
    valid = torch.ones(1, 1, 257, dtype=torch.bool)
    grad = torch.randn(1, 1, 257, 24)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3, 7):
            torch.set_num_threads(threads)
            out = native_band.native_band_attention(q, k, v, 11, 5, valid, scale=0.2)
            results.append((out, *_grads(out, (q, k, v), grad)))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("stream_limit", [1 << 62, 0])
def test_heads_split_from_a_projection_match_contiguous_inputs(monkeypatch, stream_limit):
    """q, k, v as multi-head attention makes them (a (B, N, H * D) projection viewed as (B, N, H, D) and
    transposed), keys and values shared by all heads through a stride-0 expand, and a transposed output
    gradient: exactly the results of contiguous copies, the dense reference's output, and gradients that
    reach the projection and the shared head. (Reading such views in place through their strides was
    measured slower than copying them first: 169 against 125 ms fwd+bwd at 16k, +-8.)"""
    monkeypatch.setattr(native_band, "STREAM_MIN_BYTES", stream_limit)
    b, h, n, d = 2, 4, 61, 16
    generator = torch.Generator().manual_seed(5)
    projected = torch.randn(b, n, h * d, generator=generator).requires_grad_()  # (B, N, H * D)
    q = projected.view(b, n, h, d).transpose(1, 2)  # (B, H, N, D), strides (N*H*D, D, H*D, 1)
    shared = torch.randn(b, 1, n, d, generator=generator).requires_grad_()  # one key/value head for all
    k, v = shared.expand(b, h, n, d), (2 * shared).expand(b, h, n, d)
    valid = (~padding_mask(b, n, [n, n - 9]))[:, None].expand(b, h, n)
    grad = torch.randn(b, n, h, d, generator=generator).transpose(1, 2)  # non-contiguous dO
    out = native_band.native_band_attention(q, k, v, 7, 3, valid, scale=0.3)
    got = _grads(out, (projected, shared), grad)
    copies = [x.detach().contiguous().requires_grad_() for x in (q, k, v)]
    want_out = native_band.native_band_attention(*copies, 7, 3, valid, scale=0.3)
    want = _grads(want_out, copies, grad.contiguous())
    assert torch.equal(out, want_out)
    # the projection's gradient is dq in (B, N, H * D) layout; the shared head sums dk + 2 dv over heads
    assert torch.equal(got[0], want[0].transpose(1, 2).reshape(b, n, h * d))
    torch.testing.assert_close(got[1], (want[1] + 2 * want[2]).sum(1, keepdim=True), atol=1e-6, rtol=1e-6)
    q64, k64, v64 = (x.detach().double() for x in (q, k, v))
    ref, _ = masked_attention(q64, k64, v64, band_allowed(n, 7, 3, ~valid[:, 0]), scale=0.3)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)


def test_non_temporal_stores_write_the_same_bits_and_are_used_only_where_allowed(monkeypatch):
    """Large outputs are written with streaming stores; with the size limit lowered to 0 the small tensors
    here take that path, and outputs and gradients must be bit-identical to plain stores. Rows that are not
    whole registers, float64 and misaligned views never stream."""
    q, k, v = _qkv(2, 3, 77, 64, 40, dtype=torch.float32)  # d = 64 (8 registers), dv = 40 (5)
    valid = torch.ones(2, 3, 77, dtype=torch.bool)
    valid[1, :, 70:] = False
    grad = torch.randn(2, 3, 77, 40)
    results = {}
    for limit in (1 << 62, 0):
        monkeypatch.setattr(native_band, "STREAM_MIN_BYTES", limit)
        out = native_band.native_band_attention(q, k, v, 9, 4, valid, scale=0.125)
        results[limit] = (out, *_grads(out, (q, k, v), grad))
    for plain, streamed in zip(results[1 << 62], results[0]):
        assert torch.equal(plain, streamed)
    big = torch.empty(1, 1, 8, 16)
    assert native_band._streamed(big) == 1  # the limit is still 0 here
    assert native_band._streamed(torch.empty(1, 1, 8, 12)) == 0  # 12 floats: not whole registers
    assert native_band._streamed(big.double()) == 0
    assert native_band._streamed(torch.empty(1, 1, 8, 17)[..., 1:]) == 0  # 4 bytes past an aligned start
    monkeypatch.setattr(native_band, "STREAM_MIN_BYTES", 1 << 20)
    assert native_band._streamed(big) == 0  # 512 bytes: below the limit, stays cached


def test_nan_in_a_query_poisons_its_own_output_as_in_the_blocked_kernel():
    q, k, v = _qkv(1, 1, 20, 16, dtype=torch.float32)
    q = q.detach().clone()
    q[0, 0, 7, 3] = float("nan")
    valid = torch.ones(1, 1, 20, dtype=torch.bool)
    out = native_band.native_band_attention(q, k.detach(), v.detach(), 4, 4, valid, scale=0.25)
    blocked = banded_attention(q, k.detach(), v.detach(), 4, 4, valid, scale=0.25, block_size=8)
    assert torch.equal(out.isnan(), blocked.isnan()) and bool(out[0, 0, 7].isnan().all())


def test_inference_matches_training_forward():
    q, k, v = _qkv(2, 2, 90, 16, dtype=torch.float32)
    valid = torch.ones(2, 2, 90, dtype=torch.bool)
    with torch.no_grad():  # no probabilities kept
        inference = native_band.native_band_attention(q, k, v, 7, 3, valid, scale=0.25)
    assert torch.equal(inference, native_band.native_band_attention(q, k, v, 7, 3, valid, scale=0.25))


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """Rebuild the library from scratch under the test's own cache directory and settings."""
    monkeypatch.setenv("SEQATTN_CACHE_DIR", str(tmp_path / "cache"))
    native_band._library.cache_clear()
    yield tmp_path / "cache"
    monkeypatch.undo()
    native_band._library.cache_clear()


def test_the_library_is_built_once_into_the_cache(fresh_library):
    assert native_band._library() is not None
    (built,) = fresh_library.glob("band_cpu-*.so")
    assert native_band.describe().startswith("fused CPU kernel") and str(built) in native_band.describe()
    stamp = built.stat().st_mtime_ns
    native_band._library.cache_clear()
    assert native_band._library() is not None
    assert built.stat().st_mtime_ns == stamp and list(fresh_library.glob("*")) == [built]


def test_a_changed_header_means_a_new_build(fresh_library, monkeypatch, tmp_path):
    """The cache key covers every source file: a library built from an older header is never reused."""
    sources = tmp_path / "pkg" / "csrc"
    shutil.copytree(Path(native_band.__file__).with_name("csrc"), sources)
    monkeypatch.setattr(native_band, "__file__", str(sources.parent / "native_band.py"))
    assert native_band._library() is not None
    (first,) = fresh_library.glob("band_cpu-*.so")
    with open(sources / "band_avx2.h", "a", encoding="utf-8") as header:
        header.write("/* edited */\n")
    native_band._library.cache_clear()
    assert native_band._library() is not None
    assert len(list(fresh_library.glob("band_cpu-*.so"))) == 2 and first.exists()


def test_the_portable_loops_match_the_reference_too(fresh_library, monkeypatch):
    """float32 runs AVX2 code where the CPU has it; CPUs without it run the portable loops (as float64 does
    everywhere): built here with AVX2 switched off, they must give the same answers."""
    monkeypatch.setenv("SEQATTN_NATIVE_CFLAGS", "-mno-avx2 -mno-fma")
    native_band._library.cache_clear()
    assert native_band._library() is not None
    for b, h, n, d, dv, left, right in CASES[:4]:
        q, k, v = _qkv(b, h, n, d, dv, torch.float32)
        mask = padding_mask(b, n, [max(1, n - 2 * row) for row in range(b)])
        out = native_band.native_band_attention(
            q, k, v, left, right, (~mask)[:, None].expand(b, h, n), scale=d**-0.5, self_bias=0.5 if left else 0.0
        )
        want = banded_attention(
            q.double(),
            k.double(),
            v.double(),
            left,
            right,
            (~mask)[:, None].expand(b, h, n),
            scale=d**-0.5,
            self_bias=0.5 if left else 0.0,
            block_size=8,
        )
        grad = torch.randn_like(want)
        for got, ref in zip(_grads(out, (q, k, v), grad.float()), _grads(want, (q, k, v), grad)):
            torch.testing.assert_close(got, ref, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(out.double(), want, atol=2e-5, rtol=2e-5)


def test_without_a_compiler_or_when_disabled_everything_runs_through_the_blocked_kernel(
    fresh_library, monkeypatch, caplog
):
    q, k, v = _qkv(1, 2, 40, 8)
    want = local_attention(q, k, v, 3, 3, block_size=8)  # the blocked kernel: nothing built yet
    monkeypatch.setenv("CC", os.path.join(str(fresh_library), "no-such-compiler"))
    native_band._library.cache_clear()
    assert native_band._library() is None and not native_band.usable(q, 3, 3)
    assert "no C compiler" in native_band.describe()
    torch.testing.assert_close(local_attention(q, k, v, 3, 3), want, atol=1e-12, rtol=1e-12)
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails: a warning naming the command, then the fallback
    native_band._library.cache_clear()
    with caplog.at_level("WARNING", logger="seqattn.nn.native_band"):
        assert native_band._library() is None
    assert "native band attention unavailable" in caplog.text and "false" in caplog.text
    monkeypatch.delenv("CC")
    monkeypatch.setenv("SEQATTN_NATIVE", "0")
    native_band._library.cache_clear()
    assert native_band._library() is None and "SEQATTN_NATIVE=0" in native_band.describe()
    assert not list(fresh_library.glob("*")), "a failed build left files behind"
