"""Shifted-window and pooled (HiLo) kernels, full heads, rotary, and the mixed-head MultiHeadAttention."""
import pytest
import torch
from dense_reference import band_allowed, dilated_allowed, global_reference, key_allowed, masked_attention, padding_mask

from seqattn.nn import (
    AttentionConfig,
    MultiHeadAttention,
    Rotary,
    full_attention,
    pooled_attention,
    shifted_window_attention,
)
from seqattn.nn.heads import DilatedHeads, GlobalTokenHeads, LocalHeads, PooledHeads, RoutingHeads, ShiftedWindowHeads


def _inputs(b=2, h=2, n=23, d=8):
    return [torch.randn(b, h, n, d, dtype=torch.float64, requires_grad=True) for _ in range(3)]


def _check(out, ref, inputs):
    grad = torch.randn_like(out)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
    for g, w in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window,shift,n", [(5, 0, 23), (5, 2, 23), (8, 4, 8), (4, 7, 3), (1, 0, 6)])
def test_shifted_window_matches_reference(window, shift, n, causal):
    q, k, v = _inputs(n=n)
    mask = padding_mask(2, n, [n, max(1, n - 5)])
    out = shifted_window_attention(q, k, v, window, shift, mask, causal=causal)
    ids = (torch.arange(n) + shift % window) // window
    allowed = (ids[:, None] == ids[None, :])[None, None] & key_allowed(n, mask, causal)
    ref, _ = masked_attention(q, k, v, allowed)
    _check(out, ref, (q, k, v))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pool,n", [(4, 23), (3, 9), (1, 7), (10, 5)])
def test_pooled_matches_reference(pool, n, causal):
    q, k, v = _inputs(n=n)
    mask = padding_mask(2, n, [n, max(1, n - 6)])
    out = pooled_attention(q, k, v, pool, mask, causal=causal)
    # reference: explicit pooling matrix over real tokens, then masked attention over pools
    groups = -(-n // pool)
    member = torch.zeros(2, groups, n, dtype=torch.float64)
    for g in range(groups):
        member[:, g, g * pool : (g + 1) * pool] = 1.0
    member = member * (~mask)[:, None, :]
    average = member / member.sum(-1, keepdim=True).clamp(min=1)  # (B, M, N)
    kp, vp = average[:, None] @ k, average[:, None] @ v
    allowed = (member.sum(-1) > 0)[:, None, None, :]
    if causal:
        ends = (torch.arange(groups) + 1) * pool - 1
        allowed = allowed & (ends[None, :] <= torch.arange(n)[:, None])
    ref, _ = masked_attention(q, kp, vp, allowed)
    _check(out, ref, (q, k, v))


@pytest.mark.parametrize("kernel", ["window", "pooled"])
def test_causal_variants_do_not_leak(kernel):
    q, k, v = (x.detach() for x in _inputs(n=30))
    t = 13

    def run(a, b, c):
        if kernel == "window":
            return shifted_window_attention(a, b, c, 6, 3, causal=True)
        return pooled_attention(a, b, c, 4, causal=True)

    out = run(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, t + 1 :] *= -5
    v2[:, :, t + 1 :] += 3
    torch.testing.assert_close(run(q, k2, v2)[:, :, : t + 1], out[:, :, : t + 1], atol=0, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_full_attention_matches_reference_and_handles_all_padding(causal):
    q, k, v = _inputs(n=13)
    mask = padding_mask(2, 13, [13, 0])
    out = full_attention(q, k, v, mask, causal=causal)
    ref, probs = masked_attention(q, k, v, key_allowed(13, mask, causal))
    _check(out, ref, (q, k, v))
    out_w, weights = full_attention(q, k, v, mask, causal=causal, return_weights=True)
    torch.testing.assert_close(weights, probs)
    torch.testing.assert_close(out_w, ref)


def test_rotary_scores_depend_only_on_relative_position():
    rotary = Rotary(8).double()
    q = torch.randn(1, 1, 1, 8, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 8, dtype=torch.float64)
    near = (rotary(q, offset=10) * rotary(k, offset=7)).sum()
    far = (rotary(q, offset=110) * rotary(k, offset=107)).sum()
    torch.testing.assert_close(near, far)
    assert not torch.allclose(near, (rotary(q, offset=10) * rotary(k, offset=3)).sum())


def test_all_full_heads_match_torch_multihead_attention():
    """The projections + full heads reproduce torch.nn.MultiheadAttention (a reference nobody here wrote)."""
    torch.manual_seed(0)
    ours = MultiHeadAttention(32, AttentionConfig(num_heads=4)).double().eval()
    theirs = torch.nn.MultiheadAttention(32, 4, batch_first=True).double().eval()
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        theirs.out_proj.weight.copy_(ours.out_proj.weight)
        theirs.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    mask = padding_mask(2, 11, [11, 6])
    got = ours(x, mask).out
    want, _ = theirs(x, x, x, key_padding_mask=mask, need_weights=False)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1, :6], want[1, :6])


def test_local_heads_with_a_covering_window_equal_full_heads():
    torch.manual_seed(0)
    full = MultiHeadAttention(32, AttentionConfig(num_heads=4)).double()
    local = MultiHeadAttention(
        32, AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=40, window_right=40))
    )
    local.load_state_dict(full.state_dict())
    x = torch.randn(2, 19, 32, dtype=torch.float64)
    torch.testing.assert_close(local.double()(x).out, full(x).out)


def test_mixed_heads_are_split_and_weights_returned():
    config = AttentionConfig(
        num_heads=8,
        local=LocalHeads(heads=3, window_left=4, window_right=4),
        routing=RoutingHeads(heads=2, window=4, clusters=2),
        shifted_window=ShiftedWindowHeads(heads=1, window=5),
        pooled=PooledHeads(heads=1, pool_size=3),
    )
    mha = MultiHeadAttention(64, config)
    assert [g[0] for g in mha.head_groups()] == ["local", "routing", "window", "pooled", "full"]
    x = torch.randn(2, 17, 64)
    result = mha(x, padding_mask(2, 17, [17, 9]), return_weights=True)
    assert result.out.shape == (2, 17, 64)
    assert result.aux_loss.requires_grad
    kinds = {w.kind: w for w in result.weights}
    assert kinds["local"].weights.shape == (2, 3, 17, 9) and kinds["local"].heads == (0, 1, 2)
    assert kinds["routing"].heads == (3, 4)
    assert kinds["full"].weights.shape == (2, 1, 17, 17)
    for w in result.weights:  # every row's weights form a distribution over its query's keys (real queries)
        dense = w.to_dense(17)
        torch.testing.assert_close(
            dense[0].sum(-1)[dense[0].sum(-1) > 0], torch.ones_like(dense[0].sum(-1)[dense[0].sum(-1) > 0])
        )
    (result.out.sum() + result.aux_loss).backward()


def test_causal_mixed_layer_does_not_leak():
    config = AttentionConfig(
        num_heads=4,
        causal=True,
        rotary=True,
        local=LocalHeads(heads=2, window_left=5, window_right=0),
        routing=RoutingHeads(heads=1, window=4, clusters=2, shared_qk=True),
        pooled=PooledHeads(heads=0),
    )
    mha = MultiHeadAttention(32, config).double().eval()
    x = torch.randn(1, 25, 32, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 12:] = torch.randn_like(x2[:, 12:])
    torch.testing.assert_close(mha(x).out[:, :12], mha(x2).out[:, :12], atol=1e-12, rtol=0)


def test_bad_head_config():
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttention(32, AttentionConfig(num_heads=4, local=LocalHeads(heads=3), routing=RoutingHeads(heads=2)))
    with pytest.raises(ValueError, match="window_right"):
        MultiHeadAttention(32, AttentionConfig(num_heads=4, causal=True, local=LocalHeads(heads=4, window_right=3)))
    with pytest.raises(ValueError, match="local: heads must be >= 0"):
        MultiHeadAttention(32, AttentionConfig(num_heads=4, local=LocalHeads(heads=-1)))
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(30, AttentionConfig(num_heads=4))


def test_gradcheck_float64():
    q, k, v = _inputs(b=1, h=1, n=10, d=3)
    mask = padding_mask(1, 10, [8])
    assert torch.autograd.gradcheck(lambda a, b, c: shifted_window_attention(a, b, c, 4, 2, mask), (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: pooled_attention(a, b, c, 3, mask, causal=True), (q, k, v))


def test_per_head_local_windows_in_a_mixed_layer_match_per_head_references():
    """local_windows gives every local head its own band; each head equals a one-head layer with that window."""
    torch.manual_seed(0)
    windows = [[6, 1], [0, 0], [2, 9]]
    config = AttentionConfig(num_heads=4, local=LocalHeads(heads=3, window_left=99, window_right=99, windows=windows))
    mha = MultiHeadAttention(32, config).double()
    x = torch.randn(2, 23, 32, dtype=torch.float64)
    mask = padding_mask(2, 23, [23, 14])
    result = mha(x, mask, return_weights=True)
    q, k, v = mha.project(x)
    heads = []
    for h in range(4):
        left, right = windows[h] if h < 3 else (23, 23)  # head 3 is a full head
        allowed = band_allowed(23, left, right, mask)
        heads.append(masked_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], allowed)[0])
    want = mha.out_proj(torch.cat(heads, 1).transpose(1, 2).reshape(2, 23, 32))
    torch.testing.assert_close(result.out, want, atol=1e-10, rtol=1e-10)
    local = next(w for w in result.weights if w.kind == "local")
    assert local.window_left == 6 and local.weights.shape == (2, 3, 23, 6 + 9 + 1)
    assert config.reach is None
    assert AttentionConfig(num_heads=3, local=LocalHeads(heads=3, windows=windows)).reach == (6, 9)


def test_bad_per_head_window_configs():
    with pytest.raises(ValueError, match="local: windows gives 1 windows for 2 local heads"):
        AttentionConfig(num_heads=2, local=LocalHeads(heads=2, windows=[[1, 1]])).validate()
    with pytest.raises(ValueError, match=r"local: windows\[1\] must be \[left, right\]"):
        AttentionConfig(num_heads=2, local=LocalHeads(heads=2, windows=[[1, 1], [2, -1]])).validate()
    with pytest.raises(ValueError, match="causal attention needs right extents of 0"):
        AttentionConfig(
            num_heads=2, causal=True, local=LocalHeads(heads=2, window_right=0, windows=[[1, 0], [2, 3]])
        ).validate()


@pytest.mark.parametrize("causal", [False, True])
def test_dilated_heads_in_a_mixed_layer_match_their_references(causal):
    torch.manual_seed(1)
    config = AttentionConfig(
        num_heads=4,
        causal=causal,
        local=LocalHeads(heads=1, window_left=3, window_right=0 if causal else 3),
        dilated=DilatedHeads(heads=2, dilation=3, window=2),
    )
    mha = MultiHeadAttention(32, config).double()
    assert [g[0] for g in mha.head_groups()] == ["local", "dilated", "full"]
    x = torch.randn(2, 29, 32, dtype=torch.float64)
    mask = None if causal else padding_mask(2, 29, [29, 17])
    result = mha(x, mask, return_weights=True)
    q, k, v = mha.project(x)
    right = 0 if causal else 3
    allowed = [
        band_allowed(29, 3, right, mask),
        dilated_allowed(29, 2, 0 if causal else 2, 3, mask),
        dilated_allowed(29, 2, 0 if causal else 2, 3, mask),
        key_allowed(29, mask, causal=causal),
    ]
    heads = [masked_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], allowed[h])[0] for h in range(4)]
    want = mha.out_proj(torch.cat(heads, 1).transpose(1, 2).reshape(2, 29, 32))
    torch.testing.assert_close(result.out, want, atol=1e-10, rtol=1e-10)
    dilated = next(w for w in result.weights if w.kind == "dilated")
    assert dilated.heads == (1, 2) and dilated.weights.shape[-1] == (3 if causal else 5)
    dense = dilated.to_dense(29)
    torch.testing.assert_close(dense.sum(-1)[0], torch.ones(2, 29, dtype=torch.float64))
    assert AttentionConfig(
        num_heads=3,
        local=LocalHeads(heads=1, window_left=4, window_right=4),
        dilated=DilatedHeads(heads=2, dilation=3, window=2),
    ).reach == (6, 6)


@pytest.mark.parametrize("causal", [False, True])
def test_global_heads_in_a_mixed_layer_match_their_references(causal):
    torch.manual_seed(2)
    config = AttentionConfig(
        num_heads=4,
        causal=causal,
        local=LocalHeads(heads=1, window_left=3, window_right=0 if causal else 3),
        dilated=DilatedHeads(heads=1, dilation=2, window=2),
        global_tokens=GlobalTokenHeads(heads=1, tokens=3, window=2, block=6),
    )
    mha = MultiHeadAttention(32, config).double()
    assert [g[0] for g in mha.head_groups()] == ["local", "dilated", "global", "full"]
    assert config.reach is None  # summaries see the whole sequence
    x = torch.randn(2, 31, 32, dtype=torch.float64)
    mask = None if causal else padding_mask(2, 31, [31, 19])
    result = mha(x, mask, return_weights=True)
    q, k, v = mha.project(x)
    right = 0 if causal else 3
    allowed = [band_allowed(31, 3, right, mask), dilated_allowed(31, 2, 0 if causal else 2, 2, mask)]
    heads = [masked_attention(q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1], allowed[h])[0] for h in range(2)]
    heads.append(
        global_reference(
            q[:, 2:3],
            k[:, 2:3],
            v[:, 2:3],
            2,
            0 if causal else 2,
            mask,
            tokens=3,
            queries=mha.global_attention.queries,
            causal=causal,
            block=6,
        )[0]
    )
    heads.append(masked_attention(q[:, 3:], k[:, 3:], v[:, 3:], key_allowed(31, mask, causal=causal))[0])
    want = mha.out_proj(torch.cat(heads, 1).transpose(1, 2).reshape(2, 31, 32))
    real = slice(None) if mask is None else ~mask
    torch.testing.assert_close(result.out[real], want[real], atol=1e-10, rtol=1e-10)
    glob = next(w for w in result.weights if w.kind == "global")
    assert glob.heads == (2,) and glob.weights.shape[-1] == (3 if causal else 5) + 3
    # the learned summary queries are trained: a loss reaches them
    result.out.sum().backward()
    assert mha.global_attention.queries.grad is not None and bool(mha.global_attention.queries.grad.abs().sum() > 0)


def test_global_config_errors_name_the_key():
    with pytest.raises(ValueError, match="global_tokens: pooling"):
        AttentionConfig(num_heads=2, global_tokens=GlobalTokenHeads(heads=1, pooling="max")).validate()
    with pytest.raises(ValueError, match="set tokens: 1"):
        AttentionConfig(
            num_heads=2,
            causal=True,
            local=LocalHeads(window_right=0),
            global_tokens=GlobalTokenHeads(heads=1, pooling="mean", tokens=3),
        ).validate()
