"""wav2vec2 model behaviour beyond HF parity: any attention per layer, padding, masking, save/load."""
import dataclasses

import pytest
import torch

import seqattn
from seqattn.models.io import ModelDirError, save_model
from seqattn.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPretraining, tiny
from seqattn.models.wav2vec2.masking import generators_for, sample_negatives, span_mask
from seqattn.nn import AttentionConfig
from seqattn.nn.heads import LocalHeads, RoutingHeads

MIXED = [
    AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=8, window_right=8)),
    AttentionConfig(
        num_heads=4,
        local=LocalHeads(heads=2, window_left=8, window_right=8),
        routing=RoutingHeads(heads=2, window=8, clusters=2),
    ),
]


def _layer_norm_tiny(**kw):
    return tiny(extractor_mode="layer_norm", conv_bias=True, **kw)


@pytest.mark.parametrize("layer_attention", [None, MIXED])
def test_padded_batch_equals_single_runs(layer_attention):
    """With the layer-norm extractor (no GroupNorm over time), padding must not change real frames."""
    torch.manual_seed(0)
    model = Wav2Vec2ForPretraining(_layer_norm_tiny(layer_attention=layer_attention)).eval()
    waves = torch.randn(2, 9000)
    lengths = torch.tensor([9000, 5000])
    with torch.no_grad():
        batched, out_lengths = model.wav2vec2(waves, lengths)
        alone, _ = model.wav2vec2(waves[1:, :5000], None)
    frames = int(out_lengths[1])
    assert alone.shape[1] == frames
    torch.testing.assert_close(batched[1, :frames], alone[0], atol=2e-5, rtol=1e-4)


def test_zero_length_input_in_a_batch():
    model = Wav2Vec2ForPretraining(_layer_norm_tiny(layer_attention=MIXED)).eval()
    waves = torch.randn(2, 4000)
    with torch.no_grad():
        out, lengths = model.wav2vec2(waves, torch.tensor([4000, 0]))
    assert lengths.tolist()[1] == 0 and torch.isfinite(out).all()


def test_extract_features_layers_and_num_layers():
    model = Wav2Vec2ForPretraining(tiny(num_layers=3)).eval()
    waves = torch.randn(1, 8000)
    layers, _ = model.extract_features(waves)
    assert len(layers) == 3
    first_two, _ = model.extract_features(waves, num_layers=2)
    assert len(first_two) == 2
    torch.testing.assert_close(first_two[1], layers[1])


def test_local_attention_model_trains():
    model = Wav2Vec2ForPretraining(tiny(layer_attention=MIXED)).train()
    out = model.pretraining_loss(torch.randn(2, 16000), None, generators_for([1, 2]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_span_mask_and_negatives():
    gens = generators_for([0, 1, 2])
    mask = span_mask(torch.tensor([100, 80, 60]), 100, 0.65, 10, gens)
    counts = mask.sum(-1)
    assert counts.min() == counts.max() > 0  # same count in every row
    assert not mask[2, 60:].any()  # never inside the padding
    negatives = sample_negatives(7, 20, generators_for([0, 1]))
    assert negatives.shape == (20, 2, 7)
    own = torch.arange(7)[None, None, :]
    assert not (negatives == own).any() and negatives.max() < 7
    with pytest.raises(ValueError, match="at least 2 masked frames"):
        sample_negatives(1, 5, generators_for([0]))


def test_quantizer_temperature_schedule():
    model = Wav2Vec2ForPretraining(tiny(latent_temp=[2.0, 0.5, 0.9]))
    model.set_num_updates(0)
    assert model.quantizer.temperature == 2.0
    model.set_num_updates(5)
    assert model.quantizer.temperature == pytest.approx(2.0 * 0.9**5)
    model.set_num_updates(1000)
    assert model.quantizer.temperature == 0.5


@pytest.mark.parametrize("cls,kwargs", [(Wav2Vec2ForPretraining, {}), (Wav2Vec2ForCTC, {"vocab_size": 12})])
def test_save_and_load_round_trip(tmp_path, cls, kwargs):
    model = cls(tiny(layer_attention=MIXED, **kwargs)).eval()
    save_model(model, tmp_path / "model", command="test")
    loaded = seqattn.load_model(tmp_path / "model")
    assert type(loaded) is type(model) and isinstance(loaded, cls)  # the objective's class, for pretraining
    waves = torch.randn(1, 6000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(waves)[0], model(waves)[0], atol=0, rtol=0)
    assert "command: `test`" in (tmp_path / "model" / "README.md").read_text()


def test_load_model_errors(tmp_path):
    with pytest.raises(ModelDirError, match="does not exist"):
        seqattn.load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="config.json is missing"):
        seqattn.load_model(tmp_path / "empty")
    save_model(Wav2Vec2ForPretraining(tiny()), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ModelDirError, match="cannot read"):
        seqattn.load_model(tmp_path / "m")


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"unknown config key\(s\): embed_dims"):
        Wav2Vec2Config.from_dict({"embed_dims": 3})
    with pytest.raises(ValueError, match=r"unknown config key\(s\): attention.heads"):
        Wav2Vec2Config.from_dict({"attention": {"heads": 3}})
    with pytest.raises(ValueError, match="layer_attention has 1 entries"):
        Wav2Vec2ForPretraining(tiny(layer_attention=MIXED[:1]))
    with pytest.raises(ValueError, match="bidirectional"):
        Wav2Vec2ForPretraining(tiny(attention=dataclasses.replace(tiny().attention, causal=True)))
    with pytest.raises(ValueError, match="vocab_size"):
        Wav2Vec2ForCTC(tiny())


def test_diversity_gradient_stays_finite_when_a_code_is_never_chosen():
    """Once the quantizer's logits grow large, some code's mean probability underflows to exactly 0; the
    diversity penalty's gradient must stay finite there (xlogy(p, p) gave log 0 + 0/0 = NaN, which stopped
    layer-norm-extractor pretraining after a few dozen updates)."""
    torch.manual_seed(0)
    model = Wav2Vec2ForPretraining(tiny())
    quantizer = model.quantizer
    with torch.no_grad():
        quantizer.weight_proj.bias.zero_()
        quantizer.weight_proj.bias[0] = -200.0  # code 0 of group 0: probability exp(-200) == 0 in float32
    x = torch.randn(2, 30, quantizer.weight_proj.in_features)
    quantized = quantizer(x, generators=generators_for([0, 1]))
    logits = quantizer.weight_proj(x).detach().view(-1, quantizer.groups, quantizer.num_vars)
    assert float(torch.softmax(logits, -1)[:, 0, 0].max()) == 0.0  # the underflow really happens
    quantized.prob_perplexity.backward()
    assert all(torch.isfinite(p.grad).all() for p in quantizer.parameters() if p.grad is not None)
    mean = torch.softmax(logits, -1).mean(0)  # (G, V): the penalty is fairseq's formula
    expected = torch.exp(-(mean * torch.log(mean + 1e-7)).sum(-1)).sum()
    torch.testing.assert_close(quantized.prob_perplexity.detach(), expected)
