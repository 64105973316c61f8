"""seqattn's wav2vec2 against HF transformers' Wav2Vec2ForPreTraining (random init, tiny configs)."""
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is a test-only reference dependency")

from seqattn.interop.hf import config_from_hf, state_dict_from_hf, state_dict_to_hf
from seqattn.models.wav2vec2 import Wav2Vec2ForPretraining

STYLES = {
    "base": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    "large": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


def _hf_model(style):
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        conv_dim=(16, 16, 16, 16, 16, 16, 16), conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_codevector_groups=2,
        num_codevectors_per_group=8, codevector_dim=24, proj_codevector_dim=20, **STYLES[style],
    )
    torch.manual_seed(0)
    model = transformers.Wav2Vec2ForPreTraining(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move every parameter off its init so norms and biases matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model


def _ours(hf):
    config = config_from_hf(hf.config.to_dict())
    model = Wav2Vec2ForPretraining(config).eval()
    model.load_state_dict(state_dict_from_hf(hf.state_dict()), strict=True)
    return model


@pytest.mark.parametrize("style", ["base", "large"])
@pytest.mark.parametrize("padded", [False, True])
def test_matches_hf_pretraining_model(style, padded):
    hf = _hf_model(style)
    ours = _ours(hf)
    torch.manual_seed(2)
    waves = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 5300]) if padded else None
    if padded:
        waves[1, 5300:] = 0.0
        attention_mask = (torch.arange(8000)[None] < lengths[:, None]).long()
    else:
        attention_mask = None
    with torch.no_grad():
        ref = hf(waves, attention_mask=attention_mask, output_hidden_states=True)
        layers, out_lengths = ours.extract_features(waves, lengths)
        projected, _ = ours(waves, lengths)
        quantized, projected_q = ours.quantize(waves, lengths)
        final, _ = ours.wav2vec2(waves, lengths)
    frames = projected.shape[1]
    valid = torch.ones(2, frames, dtype=torch.bool)
    if padded:
        valid = torch.arange(frames)[None] < out_lengths[:, None]
        assert out_lengths.tolist() == hf._get_feat_extract_output_lengths(lengths).tolist()

    def close(a, b, what):
        diff = (a - b)[valid].abs().max().item()
        assert diff <= 1e-4, f"{what}: max abs diff {diff:.2e}"

    # HF's hidden_states[i + 1] is layer i's output (pre-LN models: before the final LN, like fairseq)
    assert len(ref.hidden_states) == len(layers) + 1
    for i, layer in enumerate(layers):
        close(layer, ref.hidden_states[i + 1], f"layer {i}")
    close(final, hf.wav2vec2(waves, attention_mask=attention_mask).last_hidden_state.detach(), "encoder output")
    close(projected, ref.projected_states, "projected states (final_proj)")
    close(projected_q, ref.projected_quantized_states, "projected quantized states (project_q)")
    if not padded:
        torch.testing.assert_close(quantized.code_perplexity, ref.codevector_perplexity, atol=1e-4, rtol=1e-4)


def test_export_round_trip_is_bit_identical():
    hf = _hf_model("base")
    ours = _ours(hf)
    exported = state_dict_to_hf(ours.state_dict())
    original = hf.state_dict()
    assert set(exported) == set(original)
    for key, tensor in exported.items():
        assert torch.equal(tensor, original[key]), key


def test_unknown_hf_keys_are_named():
    with pytest.raises(ValueError, match="adapter.proj"):
        state_dict_from_hf({"wav2vec2.adapter.proj.weight": torch.zeros(1)})
