"""Conformer blocks: equal to torchaudio's ConformerLayer (an implementation nobody here wrote) with full
attention, and to the same layer with an explicit dense band mask when the heads are local; padding never
leaks; routed heads train inside it; whole wav2vec 2.0 models with Conformer blocks pretrain and fine-tune."""
import pytest
import torch
from dense_reference import band_allowed
from torchaudio.models.conformer import ConformerLayer as TorchaudioConformerLayer

from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPretraining, tiny
from seqattn.models.wav2vec2.components import ConformerLayer
from seqattn.nn import AttentionConfig
from seqattn.nn.heads import LocalHeads, RoutingHeads

DIM, FFN, HEADS, KERNEL = 32, 64, 4, 7


def _copy_from_torchaudio(ours: ConformerLayer, theirs: TorchaudioConformerLayer) -> None:
    """Load torchaudio's weights into ours: same functions, different module layout."""
    with torch.no_grad():
        for mine, other in ((ours.ffn1_norm, theirs.ffn1.sequential[0]), (ours.ffn2_norm, theirs.ffn2.sequential[0]),
                            (ours.attention_norm, theirs.self_attn_layer_norm),
                            (ours.conv.layer_norm, theirs.conv_module.layer_norm),
                            (ours.final_norm, theirs.final_layer_norm)):
            mine.load_state_dict(other.state_dict())
        for mine, other in ((ours.ffn1, theirs.ffn1), (ours.ffn2, theirs.ffn2)):
            mine.fc1.load_state_dict(other.sequential[1].state_dict())
            mine.fc2.load_state_dict(other.sequential[4].state_dict())
        q, k, v = theirs.self_attn.in_proj_weight.chunk(3)
        qb, kb, vb = theirs.self_attn.in_proj_bias.chunk(3)
        attention = ours.attention
        for proj, weight, bias in ((attention.q_proj, q, qb), (attention.k_proj, k, kb), (attention.v_proj, v, vb)):
            proj.weight.copy_(weight)
            proj.bias.copy_(bias)
        attention.out_proj.load_state_dict(theirs.self_attn.out_proj.state_dict())
        conv = theirs.conv_module.sequential
        ours.conv.pointwise_in.weight.copy_(conv[0].weight[:, :, 0])
        ours.conv.pointwise_in.bias.copy_(conv[0].bias)
        ours.conv.depthwise.load_state_dict(conv[2].state_dict())
        ours.conv.norm.load_state_dict(conv[3].state_dict())
        ours.conv.pointwise_out.weight.copy_(conv[5].weight[:, :, 0])
        ours.conv.pointwise_out.bias.copy_(conv[5].bias)


def _pair(attention: AttentionConfig, dtype=torch.float64):
    torch.manual_seed(0)
    theirs = TorchaudioConformerLayer(DIM, FFN, HEADS, KERNEL, dropout=0.0).to(dtype).eval()
    with torch.no_grad():  # BatchNorm with non-trivial running statistics, so that eval mode is really tested
        theirs.conv_module.sequential[3].running_mean.uniform_(-0.5, 0.5)
        theirs.conv_module.sequential[3].running_var.uniform_(0.5, 2.0)
        for parameter in theirs.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    ours = ConformerLayer(DIM, FFN, attention, KERNEL, "batch", 0.0, 0.0, 1e-5).to(dtype).eval()
    _copy_from_torchaudio(ours, theirs)
    return ours, theirs


def _run_theirs(theirs, x, key_padding_mask=None, attn_mask=None):
    """torchaudio's layer on (B, T, C), optionally with a dense boolean attention mask (True = may attend)."""
    if attn_mask is not None:
        attention, forward = theirs.self_attn, theirs.self_attn.forward

        def masked(query, key, value, key_padding_mask=None, need_weights=False):
            return forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                           attn_mask=~attn_mask)

        attention.forward = masked
    try:
        return theirs(x.transpose(0, 1), key_padding_mask).transpose(0, 1)
    finally:
        if attn_mask is not None:
            del theirs.self_attn.forward


@pytest.mark.parametrize("length", [1, 13, 64])
def test_full_attention_layer_equals_torchaudio_outputs_and_gradients(length):
    ours, theirs = _pair(AttentionConfig(num_heads=HEADS))
    x = torch.randn(2, length, DIM, dtype=torch.float64, requires_grad=True)
    y_ours = ours(x).x
    y_theirs = _run_theirs(theirs, x)
    torch.testing.assert_close(y_ours, y_theirs, atol=1e-10, rtol=1e-10)
    grad = torch.randn_like(y_ours)
    (g_ours,) = torch.autograd.grad(y_ours, x, grad)
    (g_theirs,) = torch.autograd.grad(y_theirs, x, grad)
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-10, rtol=1e-10)
    w_ours = torch.autograd.grad(ours(x).x, ours.conv.depthwise.weight, grad)[0]
    w_theirs = torch.autograd.grad(_run_theirs(theirs, x), theirs.conv_module.sequential[2].weight, grad)[0]
    torch.testing.assert_close(w_ours, w_theirs, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("left,right,length", [(3, 3, 29), (5, 0, 17), (0, 4, 31), (40, 40, 23)])
def test_local_heads_equal_torchaudio_with_a_dense_band_mask(left, right, length):
    ours, theirs = _pair(AttentionConfig(num_heads=HEADS, local=LocalHeads(heads=HEADS, window_left=left,
                                                                           window_right=right)))
    x = torch.randn(3, length, DIM, dtype=torch.float64, requires_grad=True)
    allowed = band_allowed(length, left, right)[0, 0]  # (T, T) True where query i may attend key j
    y_ours, y_theirs = ours(x).x, _run_theirs(theirs, x, attn_mask=allowed)
    torch.testing.assert_close(y_ours, y_theirs, atol=1e-10, rtol=1e-10)
    grad = torch.randn_like(y_ours)
    torch.testing.assert_close(torch.autograd.grad(y_ours, x, grad)[0], torch.autograd.grad(y_theirs, x, grad)[0],
                               atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("norm", ["layer", "batch"])
@pytest.mark.parametrize("heads", ["local", "routing"])
def test_padding_never_reaches_real_frames(norm, heads):
    """The depthwise convolution sees zeros where the batch is padded, and BatchNorm's training statistics
    come from real frames only: each utterance's output is the one it gets alone (train mode included)."""
    if heads == "local":
        attention = AttentionConfig(num_heads=HEADS, local=LocalHeads(heads=HEADS, window_left=4, window_right=4))
    else:
        attention = AttentionConfig(num_heads=HEADS, local=LocalHeads(heads=2, window_left=4, window_right=4),
                                    routing=RoutingHeads(heads=2, clusters=2, window=4))
    torch.manual_seed(1)
    layer = ConformerLayer(DIM, FFN, attention, KERNEL, norm, 0.0, 0.0, 1e-5).double()
    lengths = [19, 11, 6]
    x = torch.randn(3, 19, DIM, dtype=torch.float64)
    padding = torch.arange(19)[None, :] >= torch.tensor(lengths)[:, None]
    garbage = x.masked_fill(~padding[..., None], 0.0) * 1e3  # large values in the padded frames only
    for mode in ("eval", "train"):
        getattr(layer, mode)()
        if heads == "routing" or (mode == "train" and norm == "batch"):
            # routed heads' k-means and BatchNorm's batch statistics see the other utterances in train mode:
            # compare the batch with itself, with padding values changed
            if mode == "train":
                a = layer(x, padding).x
                b = layer(x + garbage, padding).x
                for i, n in enumerate(lengths):
                    torch.testing.assert_close(a[i, :n], b[i, :n], atol=1e-9, rtol=1e-9)
                continue
        batched = layer(x + garbage, padding).x
        for i, n in enumerate(lengths):
            alone = layer(x[i : i + 1, :n]).x[0]
            torch.testing.assert_close(batched[i, :n], alone, atol=1e-9, rtol=1e-9)


def test_routed_heads_train_inside_conformer_blocks():
    attention = AttentionConfig(num_heads=4, local=LocalHeads(heads=2, window_left=8, window_right=8),
                                routing=RoutingHeads(heads=2, clusters=2, window=8))
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny(vocab_size=9, frontend="fbank", fbank_bins=40, encoder_block="conformer",
                                attention=attention, conformer_kernel=5)).train()
    waves = torch.randn(2, 16000)
    logits, frames, aux = model.training_forward(waves, torch.tensor([16000, 12000]))
    assert logits.shape == (2, 24, 9) and frames.tolist() == [24, 18] and aux > 0
    (logits.square().mean() + aux).backward()
    grads = [p.grad for n, p in model.named_parameters() if "attention" in n and p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("frontend", ["cnn", "fbank"])
def test_conformer_models_pretrain_with_the_contrastive_loss(frontend):
    torch.manual_seed(0)
    config = tiny(frontend=frontend, fbank_bins=40, encoder_block="conformer", conformer_kernel=5,
                  attention=AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=8, window_right=8)),
                  mask_prob=0.3, mask_length=2, num_negatives=5)
    model = Wav2Vec2ForPretraining(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    waves, lengths = torch.randn(2, 24000), torch.tensor([24000, 20000])
    first = model.pretraining_loss(waves, lengths, generators)
    assert torch.isfinite(first.loss) and first.num_targets > 0
    for _ in range(15):
        generators = [torch.Generator().manual_seed(i) for i in range(2)]  # same masks: the loss must fall
        optimizer.zero_grad()
        out = model.pretraining_loss(waves, lengths, generators)
        out.loss.backward()
        optimizer.step()
    assert out.loss < first.loss
    if frontend == "fbank":
        assert float(first.feature_penalty) == 0.0  # nothing learned in the front end to penalise
