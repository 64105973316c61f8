"""Hugging Face ``transformers`` wav2vec2 <-> seqattn: config and parameter-name mapping.

Only plain values and tensors cross the boundary; transformers itself is imported by callers (tests, the
convert CLI), never by the model code.
"""
from __future__ import annotations

import torch

from seqattn.models.wav2vec2 import Wav2Vec2Config
from seqattn.nn import AttentionConfig

from .names import compile_names, rename

# (seqattn name, HF name) templates: {i} a layer index, {p} weight/bias, {m} an attention projection.
_NAME_PAIRS = [
    ("wav2vec2.feature_extractor.conv_layers.{i}.conv.{p}", "wav2vec2.feature_extractor.conv_layers.{i}.conv.{p}"),
    ("wav2vec2.feature_extractor.conv_layers.{i}.norm.{p}",
     "wav2vec2.feature_extractor.conv_layers.{i}.layer_norm.{p}"),
    ("wav2vec2.feature_norm.{p}", "wav2vec2.feature_projection.layer_norm.{p}"),
    ("wav2vec2.feature_projection.{p}", "wav2vec2.feature_projection.projection.{p}"),
    ("wav2vec2.mask_emb", "wav2vec2.masked_spec_embed"),
    ("wav2vec2.encoder.pos_conv.weight_g", "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    ("wav2vec2.encoder.pos_conv.weight_v", "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    ("wav2vec2.encoder.pos_conv.bias", "wav2vec2.encoder.pos_conv_embed.conv.bias"),
    ("wav2vec2.encoder.layer_norm.{p}", "wav2vec2.encoder.layer_norm.{p}"),
    ("wav2vec2.encoder.layers.{i}.attention.{m}.{p}", "wav2vec2.encoder.layers.{i}.attention.{m}.{p}"),
    ("wav2vec2.encoder.layers.{i}.attention_norm.{p}", "wav2vec2.encoder.layers.{i}.layer_norm.{p}"),
    ("wav2vec2.encoder.layers.{i}.ffn.fc1.{p}", "wav2vec2.encoder.layers.{i}.feed_forward.intermediate_dense.{p}"),
    ("wav2vec2.encoder.layers.{i}.ffn.fc2.{p}", "wav2vec2.encoder.layers.{i}.feed_forward.output_dense.{p}"),
    ("wav2vec2.encoder.layers.{i}.final_norm.{p}", "wav2vec2.encoder.layers.{i}.final_layer_norm.{p}"),
    ("quantizer.codevectors", "quantizer.codevectors"),
    ("quantizer.weight_proj.{p}", "quantizer.weight_proj.{p}"),
    ("project_q.{p}", "project_q.{p}"),
    ("final_proj.{p}", "project_hid.{p}"),
    ("head.{p}", "lm_head.{p}"),
]
_LEGACY_WEIGHT_NORM = {  # older transformers releases stored torch.nn.utils.weight_norm names
    "wav2vec2.encoder.pos_conv_embed.conv.weight_g":
        "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "wav2vec2.encoder.pos_conv_embed.conv.weight_v":
        "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original1",
}
_HF_HEADS = ("quantizer.", "project_q.", "project_hid.", "lm_head.")


_TO_HF = compile_names(_NAME_PAIRS)
_FROM_HF = compile_names([(hf, ours) for ours, hf in _NAME_PAIRS])


def state_dict_from_hf(hf_state: dict) -> dict[str, torch.Tensor]:
    """HF state dict (Wav2Vec2ForPreTraining / ForCTC, or a bare Wav2Vec2Model) -> seqattn names.

    Keys with no seqattn counterpart (e.g. an adapter) raise, naming them, so nothing is silently dropped.
    """
    converted, unknown = {}, []
    for key, tensor in hf_state.items():
        full = key if key.startswith("wav2vec2.") or key.startswith(_HF_HEADS) else f"wav2vec2.{key}"
        name = rename(_LEGACY_WEIGHT_NORM.get(full, full), _FROM_HF)
        if name is None:
            unknown.append(key)
        else:
            converted[name] = tensor
    if unknown:
        raise ValueError(f"HF parameters with no seqattn counterpart: {', '.join(sorted(unknown))}")
    return converted


def state_dict_to_hf(state: dict) -> dict[str, torch.Tensor]:
    """seqattn state dict -> HF names (the inverse of :func:`state_dict_from_hf`)."""
    converted = {}
    for key, tensor in state.items():
        name = rename(key, _TO_HF)
        if name is None:
            raise ValueError(f"seqattn parameter {key} has no HF counterpart")
        converted[name] = tensor
    return converted


def config_from_hf(hf: dict) -> Wav2Vec2Config:
    """HF ``Wav2Vec2Config.to_dict()`` values -> :class:`Wav2Vec2Config` (full attention in every layer)."""
    if hf.get("feat_extract_activation", "gelu") != "gelu" or hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError("only GELU activations are supported")
    if hf.get("add_adapter") or hf.get("adapter_attn_dim"):
        raise ValueError("HF adapters are not supported")
    conv = [[d, k, s] for d, k, s in zip(hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"])]
    return Wav2Vec2Config(
        conv_layers=conv,
        extractor_mode="default" if hf["feat_extract_norm"] == "group" else "layer_norm",
        conv_bias=bool(hf["conv_bias"]),
        embed_dim=hf["hidden_size"],
        ffn_dim=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        attention=AttentionConfig(num_heads=hf["num_attention_heads"]),
        layer_norm_first=bool(hf["do_stable_layer_norm"]),
        conv_pos=hf["num_conv_pos_embeddings"],
        conv_pos_groups=hf["num_conv_pos_embedding_groups"],
        layer_norm_eps=hf["layer_norm_eps"],
        dropout=hf["hidden_dropout"],
        activation_dropout=hf["activation_dropout"],
        dropout_input=hf["feat_proj_dropout"],
        dropout_features=hf.get("feat_quantizer_dropout", 0.0),
        layerdrop=hf["layerdrop"],
        final_dim=hf["proj_codevector_dim"],
        latent_vars=hf["num_codevectors_per_group"],
        latent_groups=hf["num_codevector_groups"],
        latent_dim=hf["codevector_dim"],
        mask_prob=hf["mask_time_prob"],
        mask_length=hf["mask_time_length"],
        mask_channel_prob=hf["mask_feature_prob"],
        mask_channel_length=hf["mask_feature_length"],
        num_negatives=hf["num_negatives"],
        logit_temp=hf["contrastive_logits_temperature"],
        diversity_weight=hf["diversity_loss_weight"],
        vocab_size=hf.get("vocab_size", 0) or 0,
        final_dropout=hf.get("final_dropout", 0.0),
    )


def config_to_hf(config: Wav2Vec2Config) -> dict:
    """:class:`Wav2Vec2Config` -> keyword values for HF ``Wav2Vec2Config`` (the inverse of :func:`config_from_hf`).

    HF wav2vec2 has only full attention, so a config with local/routing/other heads in any layer is refused:
    HF would silently run it with full attention and compute something else.
    """
    if config.frontend != "cnn" or config.encoder_block != "transformer":
        raise ValueError(
            f"frontend={config.frontend!r}, encoder_block={config.encoder_block!r}: HF Wav2Vec2 has the "
            "raw-waveform CNN and transformer blocks only"
        )
    for i in range(config.num_layers):
        attention = config.attention_for(i)
        if attention.full_heads != attention.num_heads or attention.rotary:
            raise ValueError(
                f"layer {i} uses {attention.num_heads - attention.full_heads} non-full attention heads"
                f"{' and rotary positions' if attention.rotary else ''}; HF wav2vec2 only has full attention, so "
                "it cannot represent this model (keep it in seqattn's format)"
            )
    return dict(
        conv_dim=[c[0] for c in config.conv_layers],
        conv_kernel=[c[1] for c in config.conv_layers],
        conv_stride=[c[2] for c in config.conv_layers],
        feat_extract_norm="group" if config.extractor_mode == "default" else "layer",
        conv_bias=config.conv_bias,
        hidden_size=config.embed_dim,
        intermediate_size=config.ffn_dim,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.attention.num_heads,
        do_stable_layer_norm=config.layer_norm_first,
        num_conv_pos_embeddings=config.conv_pos,
        num_conv_pos_embedding_groups=config.conv_pos_groups,
        layer_norm_eps=config.layer_norm_eps,
        hidden_dropout=config.dropout,
        attention_dropout=0.0,
        activation_dropout=config.activation_dropout,
        feat_proj_dropout=config.dropout_input,
        feat_quantizer_dropout=config.dropout_features,
        layerdrop=config.layerdrop,
        proj_codevector_dim=config.final_dim,
        num_codevectors_per_group=config.latent_vars,
        num_codevector_groups=config.latent_groups,
        codevector_dim=config.latent_dim or config.final_dim,
        mask_time_prob=config.mask_prob,
        mask_time_length=config.mask_length,
        mask_feature_prob=config.mask_channel_prob,
        mask_feature_length=config.mask_channel_length,
        num_negatives=config.num_negatives,
        contrastive_logits_temperature=config.logit_temp,
        diversity_loss_weight=config.diversity_weight,
        vocab_size=config.vocab_size or 32,
        final_dropout=config.final_dropout,
        feat_extract_activation="gelu",
        hidden_act="gelu",
    )
