"""Routing attention: dense references for both routings, causality, k-means behaviour, DDP statistics."""
import copy
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from dense_reference import masked_attention

from seqattn.nn import KMeans, RoutingAttention, routing_attention
from seqattn.nn.routing import similarities

SELF_BIAS = -5e4  # the documented shared-QK self-score suppression


def _layer_norm(x):
    return F.layer_norm(x, x.shape[-1:])


def _clusters(xn, centroids):
    unit = xn / xn.shape[-1] ** 0.5
    return torch.einsum("bhnd,hcd->bhnc", unit, centroids)


def _centroids(h, c, d, dtype=torch.float64):
    return F.normalize(torch.randn(h, c, d, dtype=dtype), dim=-1)


def causal_reference(q, k, v, centroids, window, mask, shared):
    """Query i sees itself and the `window` most recent earlier real tokens routed to its cluster."""
    qn = _layer_norm(q)
    kn = qn if shared else _layer_norm(k)
    ids = _clusters(qn, centroids).argmax(-1)  # (B, H, N)
    n = q.shape[2]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None]
    valid = torch.ones(q.shape[0], n, dtype=torch.bool) if mask is None else ~mask
    candidates = (ids[..., :, None] == ids[..., None, :]) & (j <= i) & valid[:, None, None, :]
    later = candidates.flip(-1).long().cumsum(-1).flip(-1)  # candidates at positions >= j
    allowed = candidates & (later <= window + 1)
    scores_bias = SELF_BIAS * torch.eye(n, dtype=q.dtype) if shared else 0.0
    scale = q.shape[-1] ** -0.5
    scores = (qn @ kn.transpose(-1, -2)) * scale + scores_bias
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1).nan_to_num(0.0)
    return probs @ v


def balanced_reference(q, k, v, centroids, window, mask):
    """Each cluster: its top-`window` queries attend its top-`window` keys; a query averages its clusters."""
    qn, kn = _layer_norm(q), _layer_norm(k)
    b, h, n, _ = q.shape
    valid = torch.ones(b, n, dtype=torch.bool) if mask is None else ~mask
    q_sim = _clusters(qn, centroids).masked_fill(~valid[:, None, :, None], float("-inf"))
    k_sim = _clusters(kn, centroids).masked_fill(~valid[:, None, :, None], float("-inf"))
    size = min(window, n)
    total = torch.zeros_like(v)
    count = torch.zeros(b, h, n, 1, dtype=v.dtype)
    for c in range(centroids.shape[1]):
        q_in = torch.zeros(b, h, n, dtype=torch.bool).scatter_(2, q_sim[..., c].topk(size, dim=2).indices, True)
        k_in = torch.zeros(b, h, n, dtype=torch.bool).scatter_(2, k_sim[..., c].topk(size, dim=2).indices, True)
        allowed = k_in[..., None, :] & valid[:, None, None, :]
        out, _ = masked_attention(qn, kn, v, allowed)
        total = total + out * q_in[..., None]
        count = count + q_in[..., None]
    return total / count.clamp(min=1)


def _inputs(b=2, h=2, n=29, d=8):
    return [torch.randn(b, h, n, d, dtype=torch.float64, requires_grad=True) for _ in range(3)]


def _mask(b, n, lengths):
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i, length in enumerate(lengths):
        mask[i, length:] = True
    return mask


def _check(out, ref, inputs, valid_rows):
    grad = torch.randn_like(out) * valid_rows
    torch.testing.assert_close(out * valid_rows, ref * valid_rows, atol=1e-10, rtol=1e-10)
    got = torch.autograd.grad(out, inputs, grad, allow_unused=True)
    want = torch.autograd.grad(ref, inputs, grad, allow_unused=True)
    for g, w in zip(got, want):
        g = torch.zeros_like(w) if g is None else g
        torch.testing.assert_close(g, w, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("window,n,clusters", [(4, 29, 3), (1, 17, 2), (50, 23, 4), (3, 1, 2)])
def test_causal_matches_reference(shared, window, n, clusters):
    q, k, v = _inputs(n=n)
    centroids = _centroids(2, clusters, 8)
    mask = _mask(2, n, [n, max(1, n - 9)])
    out = routing_attention(q, q if shared else k, v, centroids, window, causal=True, key_padding_mask=mask,
                            shared_qk=shared)
    ref = causal_reference(q, k, v, centroids, window, mask, shared)
    _check(out, ref, (q, k, v) if not shared else (q, v), (~mask)[:, None, :, None].double())


@pytest.mark.parametrize("window,n,clusters", [(8, 24, 3), (5, 19, 4), (30, 12, 2)])
def test_balanced_matches_reference(window, n, clusters):
    q, k, v = _inputs(n=n)
    centroids = _centroids(2, clusters, 8)
    mask = _mask(2, n, [n, n - 4])
    out = routing_attention(q, k, v, centroids, window, causal=False, key_padding_mask=mask)
    ref = balanced_reference(q, k, v, centroids, window, mask)
    _check(out, ref, (q, k, v), (~mask)[:, None, :, None].double())


def test_routed_weights_reproduce_output():
    q, k, v = (x.detach() for x in _inputs(n=21))
    centroids = _centroids(2, 3, 8)
    for causal in (True, False):
        out, weights = routing_attention(q, k, v, centroids, 5, causal=causal, return_weights=True)
        dense = weights.to_dense(21)  # (B, H, N, N)
        torch.testing.assert_close(dense @ v, out, atol=1e-10, rtol=1e-10)


def _module(causal, shared=True, **kw):
    return RoutingAttention(2, 8, num_clusters=3, window=4, causal=causal, shared_qk=shared, **kw).double()


@pytest.mark.parametrize("train", [True, False])
def test_causal_module_does_not_leak_future(train):
    module = _module(causal=True).train(train)
    q, _, v = (x.detach() for x in _inputs(n=40))
    t = 19
    q2, v2 = q.clone(), v.clone()
    q2[:, :, t + 1 :] = torch.randn_like(q2[:, :, t + 1 :]) * 10
    v2[:, :, t + 1 :] = torch.randn_like(v2[:, :, t + 1 :]) * 10
    first, second = copy.deepcopy(module), copy.deepcopy(module)  # same centroids before each call
    out1 = first(q, q, v).out
    out2 = second(q2, q2, v2).out
    # Future tokens re-sort the permuted sequence, which can move a past query to another block and change
    # the floating-point summation order; a real leak of the x10 perturbation would be many orders larger.
    torch.testing.assert_close(out1[:, :, : t + 1], out2[:, :, : t + 1], atol=1e-12, rtol=0)
    assert not torch.allclose(out1[:, :, t + 1 :], out2[:, :, t + 1 :])


def test_centroids_move_in_train_not_in_eval_and_eval_is_deterministic():
    module = _module(causal=False, shared=False, decay=0.5)
    q, k, v = (x.detach() for x in _inputs(n=32))
    before = module.kmeans.means.clone()
    module.eval()
    a = module(q, k, v).out
    b = module(q, k, v).out
    torch.testing.assert_close(module.kmeans.means, before, atol=0, rtol=0)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    module.train()
    module(q, k, v)
    assert (module.kmeans.means - before).abs().max() > 1e-3
    torch.testing.assert_close(module.kmeans.means.norm(dim=-1), torch.ones(2, 3, dtype=torch.float64))


def test_commitment_loss_has_gradient():
    module = _module(causal=True)
    q, k, v = _inputs(n=16)
    aux = module(q, q, v).aux_loss
    assert aux.item() > 0
    (grad,) = torch.autograd.grad(aux, q)
    assert grad.abs().max() > 0


def test_kmeans_recovers_planted_clusters():
    torch.manual_seed(1)
    heads, clusters, dim = 1, 4, 16
    planted = F.normalize(torch.randn(clusters, dim), dim=-1)
    kmeans = KMeans(heads, clusters, dim, decay=0.8)
    for _ in range(60):
        labels = torch.randint(clusters, (1, 1, 256))
        x = F.normalize(planted[labels] + 0.15 * torch.randn(1, 1, 256, dim), dim=-1)
        kmeans.update(x, similarities(x, kmeans.means).argmax(-1), torch.ones(1, 1, 256, dtype=torch.bool))
    labels = torch.randint(clusters, (1, 1, 500))
    x = F.normalize(planted[labels] + 0.15 * torch.randn(1, 1, 500, dim), dim=-1)
    ids = torch.einsum("bhnd,hcd->bhnc", x, kmeans.means).argmax(-1)
    # purity: the fraction of points whose cluster's majority label is their own label
    correct = sum(torch.bincount(labels[ids == c], minlength=clusters).max().item() for c in range(clusters))
    assert correct / 500 > 0.95
    # and every planted cluster has its own centroid
    assert len({torch.bincount(ids[labels == c], minlength=clusters).argmax().item() for c in range(clusters)}) == 4


@pytest.mark.parametrize("causal", [True, False])
def test_padded_batch_equals_single_runs(causal):
    module = _module(causal=causal, shared=causal).eval()
    lengths = [30, 18]
    q, k, v = (x.detach() for x in _inputs(n=30))
    mask = _mask(2, 30, lengths)
    batched = module(q, k, v, mask).out
    for i, length in enumerate(lengths):
        alone = module(q[i : i + 1, :, :length], k[i : i + 1, :, :length], v[i : i + 1, :, :length]).out
        torch.testing.assert_close(batched[i : i + 1, :, :length], alone, atol=1e-12, rtol=1e-12)


def test_bad_arguments():
    q, k, v = _inputs(n=8)
    with pytest.raises(ValueError, match="window"):
        routing_attention(q, k, v, _centroids(2, 2, 8), 0, causal=True)
    with pytest.raises(ValueError, match="centroids"):
        routing_attention(q, k, v, _centroids(3, 2, 8), 4, causal=True)
    with pytest.raises(ValueError, match="num_clusters"):
        RoutingAttention(2, 8, num_clusters=0, window=4, causal=True)
    with pytest.raises(ValueError, match="decay"):
        RoutingAttention(2, 8, num_clusters=2, window=4, causal=True, decay=1.5)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, data, result_dir):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    kmeans = KMeans(2, 3, 8, decay=0.5)
    for step in range(3):
        x = data[step][rank]
        kmeans.update(x, similarities(x, kmeans.means).argmax(-1), torch.ones(x.shape[:3], dtype=torch.bool))
    torch.save(kmeans.means, os.path.join(result_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_kmeans_statistics_are_all_reduced_under_ddp(tmp_path):
    torch.manual_seed(3)
    data = [[F.normalize(torch.randn(1, 2, 10, 8), dim=-1) for _ in range(2)] for _ in range(3)]
    mp.spawn(_ddp_worker, args=(2, _free_port(), data, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.testing.assert_close(ranks[0], ranks[1], atol=0, rtol=0)
    torch.manual_seed(0)
    single = KMeans(2, 3, 8, decay=0.5)  # one process that sees both halves at once
    for step in range(3):
        both = torch.cat(data[step], dim=0)
        single.update(both, similarities(both, single.means).argmax(-1), torch.ones(both.shape[:3], dtype=torch.bool))
    torch.testing.assert_close(ranks[0], single.means, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_float64(causal):
    q, k, v = _inputs(b=1, h=1, n=9, d=4)
    centroids = _centroids(1, 2, 4)
    mask = _mask(1, 9, [7])
    assert torch.autograd.gradcheck(
        lambda a, b, c: routing_attention(a, b, c, centroids, 3, causal=causal, key_padding_mask=mask), (q, k, v)
    )
