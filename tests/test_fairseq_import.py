"""fairseq checkpoint import, checked against outputs computed by fairseq 0.12.2 itself (../shared/fixtures)."""
import argparse
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from seqattn.interop.fairseq import (
    FairseqImportError,
    build_seqattn_model,
    ctc_vocabulary,
    load_fairseq_checkpoint,
    read_fairseq,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "fairseq"
pytestmark = pytest.mark.skipif(not (FIXTURES / "inputs.npz").is_file(),
                                reason=f"fairseq reference fixtures not found at {FIXTURES} (../shared is absent)")
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def inputs():
    data = np.load(FIXTURES / "inputs.npz")
    return {key: torch.from_numpy(data[key]) for key in data.files}


def _reference(name):
    data = np.load(FIXTURES / f"{name}.npz")
    return {key: torch.from_numpy(data[key]) for key in data.files}


def _close(ours, theirs, what):
    assert ours.shape == theirs.shape, f"{what}: {tuple(ours.shape)} vs {tuple(theirs.shape)}"
    diff = (ours.float() - theirs.float()).abs().max().item() if ours.numel() else 0.0
    assert diff <= TOLERANCE, f"{what}: max abs diff {diff:.2e} > {TOLERANCE}"


def _case(inputs, case):
    if case == "nopad":
        return inputs["source"], None
    return inputs["source_padded"], inputs["source_lengths"]


@pytest.mark.parametrize("name", ["w2v2_base_like", "w2v2_large_like"])
@pytest.mark.parametrize("case", ["nopad", "pad"])
def test_pretraining_checkpoints_reproduce_fairseq(name, case, inputs):
    ref = _reference(name)
    imported = read_fairseq(FIXTURES / f"{name}.pt")
    assert imported.kind == "pretraining"
    assert imported.config.extractor_mode == ("default" if name == "w2v2_base_like" else "layer_norm")
    assert imported.config.layer_norm_first == (name == "w2v2_large_like")
    assert imported.config.normalize_waveform == (name == "w2v2_large_like")  # task.normalize carried over
    model = build_seqattn_model(imported)
    source, lengths = _case(inputs, case)
    backbone = model.wav2vec2
    with torch.no_grad():
        _close(backbone.feature_extractor(source), ref[f"{case}.cnn_raw"], "CNN") if f"{case}.cnn_raw" in ref else None
        features = backbone.features(source, lengths)
        _close(features.x, ref[f"{case}.features"], "features")
        _close(backbone.feature_projection(features.x), ref[f"{case}.features_proj"], "features_proj")
        if f"{case}.padding_mask" in ref:
            assert torch.equal(features.padding_mask, ref[f"{case}.padding_mask"])
        encoded = backbone.encode(features)
        out, layers = encoded.x, encoded.layer_outputs
        for i, layer in enumerate(layers):
            _close(layer, ref[f"{case}.layer{i}.x"].transpose(0, 1), f"layer {i}")
        _close(out, ref[f"{case}.x"], "encoder output")
        _close(model.final_proj(out), ref[f"{case}.final_proj"], "final_proj")
        frames = None if features.padding_mask is None else ~features.padding_mask
        quantized = model.quantizer(features.x, frames)
        _close(quantized.x, ref[f"{case}.quantizer.x"], "quantizer x")
        _close(model.project_q(quantized.x), ref[f"{case}.project_q"], "project_q")


@pytest.mark.parametrize("file", ["w2v2_ctc_base_like.pt", "w2v2_ctc_base_like.dictcfg.pt"])
@pytest.mark.parametrize("case", ["nopad", "pad"])
def test_ctc_checkpoints_reproduce_fairseq_logits(file, case, inputs):
    ref = _reference("w2v2_ctc_base_like")
    imported = read_fairseq(FIXTURES / file)
    assert imported.kind == "ctc"
    # blank = fairseq <s> (0); seqattn order puts <unk> and | next, then letters, then <pad> </s>
    assert imported.vocabulary.tokens == ["<blank>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "<pad>", "</s>"]
    assert imported.output_order == [0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2]
    model = build_seqattn_model(imported)
    source, lengths = _case(inputs, case)
    with torch.no_grad():
        logits, frame_lengths = model(source, lengths)
        layers, _ = model.extract_features(source, lengths)
    order = imported.output_order
    theirs = ref[f"{case}.encoder_out"].transpose(0, 1)[..., order]  # (B, T, V) in seqattn order
    if lengths is None:
        _close(logits, theirs, "CTC logits")
        _close(torch.log_softmax(logits, -1), ref[f"{case}.log_probs"].transpose(0, 1)[..., order], "log-probs")
    else:
        valid = torch.arange(logits.shape[1])[None, :] < frame_lengths[:, None]
        assert torch.equal(~valid, ref["pad.padding_mask"])
        _close(logits[valid], theirs[valid], "CTC logits (valid frames)")
        _close(torch.log_softmax(logits, -1)[valid], ref["pad.log_probs"].transpose(0, 1)[..., order][valid],
               "log-probs (valid frames)")
    for i, layer in enumerate(layers):
        _close(layer, ref[f"{case}.layer{i}.x"].transpose(0, 1), f"layer {i}")


def test_vocabulary_mapping_is_a_permutation_that_keeps_the_blank():
    symbols = ["<s>", "<pad>", "</s>", "<unk>", "क", "|", "ि"]
    vocab, order = ctc_vocabulary(symbols)
    assert sorted(order) == list(range(len(symbols))) and order[0] == 0
    assert [symbols[i] for i in order][1:3] == ["<unk>", "|"]
    assert vocab.decode([vocab.index["क"], vocab.index["<pad>"], vocab.index["|"], vocab.index["ि"]]) == "क ि"
    with pytest.raises(FairseqImportError, match="word boundary"):
        ctc_vocabulary(["<s>", "<pad>", "</s>", "<unk>", "a"])


def test_dict_file_gives_the_same_vocabulary(tmp_path):
    from_checkpoint = read_fairseq(FIXTURES / "w2v2_ctc_base_like.pt")
    from_file = read_fairseq(FIXTURES / "w2v2_ctc_base_like.pt", dict_path=FIXTURES / "dict.ltr.txt")
    assert from_file.vocabulary.tokens == from_checkpoint.vocabulary.tokens
    short = tmp_path / "dict.ltr.txt"
    short.write_text("| 10\nE 5\n")
    with pytest.raises(FairseqImportError, match="6 symbols but the model has 12 outputs"):
        read_fairseq(FIXTURES / "w2v2_ctc_base_like.pt", dict_path=short)


def _rewritten(tmp_path, name, edit):
    state = _unsafe_fixture(name)
    edit(state)
    path = tmp_path / name
    torch.save(state, path)
    return path


def _unsafe_fixture(name):
    """A fixture read through the importer's safe loader, as plain objects that torch.save can write back."""
    checkpoint = load_fairseq_checkpoint(FIXTURES / name)
    checkpoint.pop("task_state", None)  # the Dictionary stand-in cannot be pickled back under fairseq's name
    return checkpoint


def test_legacy_args_namespace_and_fp16_checkpoints(tmp_path, inputs):
    """Pre-hydra files keep a flat argparse Namespace in 'args'; released models may hold fp16 tensors."""
    ref = _reference("w2v2_base_like")

    def to_legacy_fp16(state):
        model_cfg, task_cfg = state["cfg"]["model"], state["cfg"]["task"]
        state["args"] = argparse.Namespace(**{**task_cfg, **model_cfg, "arch": "wav2vec2"})
        state["cfg"] = None
        state["model"] = {k: v.half() for k, v in state["model"].items()}

    path = _rewritten(tmp_path, "w2v2_base_like.pt", to_legacy_fp16)
    imported = read_fairseq(path)
    original = read_fairseq(FIXTURES / "w2v2_base_like.pt")
    assert imported.config == original.config
    for key, tensor in imported.state_dict.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, original.state_dict[key].half().float())
    model = build_seqattn_model(imported)
    with torch.no_grad():
        out, _ = model.wav2vec2(inputs["source"])
    assert (out - ref["nopad.x"]).abs().max() < 0.05  # fp16-rounded weights: close, not equal


def test_unknown_globals_are_refused_by_name(tmp_path):
    witness = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {witness}",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "cfg": Evil()}, path)
    with pytest.raises(FairseqImportError, match=r"global posix\.system.*could run arbitrary code"):
        load_fairseq_checkpoint(path)
    assert not witness.exists()


def test_truncated_wrong_model_and_missing_keys_are_clear_errors(tmp_path):
    data = (FIXTURES / "w2v2_base_like.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(FairseqImportError, match="truncated"):
        read_fairseq(truncated)

    def translation(state):
        state["cfg"]["model"] = {"_name": "transformer", "encoder_layers": 6}
        state["model"] = {"encoder.embed_tokens.weight": torch.zeros(10, 4),
                          "decoder.output_projection.weight": torch.zeros(10, 4)}

    with pytest.raises(FairseqImportError, match="decoder.output_projection.weight"):
        read_fairseq(_rewritten(tmp_path, "w2v2_base_like.pt", translation))

    def drop_key(state):
        del state["model"]["encoder.layers.1.fc2.weight"]

    imported = read_fairseq(_rewritten(tmp_path, "w2v2_base_like.pt", drop_key))
    with pytest.raises(FairseqImportError,
                       match=r"missing from the checkpoint: wav2vec2\.encoder\.layers\.1\.ffn\.fc2\.weight"):
        build_seqattn_model(imported)
    with pytest.raises(FairseqImportError, match="no such checkpoint"):
        read_fairseq(tmp_path / "absent.pt")


def test_cfg_that_disagrees_with_its_weights_is_refused_before_building(tmp_path, monkeypatch):
    """A fairseq checkpoint whose cfg was edited: the shapes are compared on a meta-device model, so the real
    model is never built from the wrong sizes."""
    from seqattn.models.wav2vec2 import Wav2Vec2ForPretraining

    def wider_ffn(state):
        state["cfg"]["model"]["encoder_ffn_embed_dim"] = state["cfg"]["model"]["encoder_ffn_embed_dim"] * 2

    imported = read_fairseq(_rewritten(tmp_path, "w2v2_base_like.pt", wider_ffn))
    built = []
    real_init = Wav2Vec2ForPretraining.__init__
    monkeypatch.setattr(Wav2Vec2ForPretraining, "__init__", lambda self, config: (
        built.append(torch.empty(0).device.type), real_init(self, config))[1])
    with pytest.raises(FairseqImportError, match=r"ffn\.fc1\.weight has shape \(\d+, \d+\), the config implies"):
        build_seqattn_model(imported)
    assert built == ["meta"]  # only the shape-checking model was built
