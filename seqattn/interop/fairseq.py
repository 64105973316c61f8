"""fairseq wav2vec 2.0 checkpoints (pretraining ``Wav2Vec2Model`` and CTC ``Wav2VecCtc``) -> seqattn models.

fairseq no longer installs on current Python, so its files are read without it: ``torch.load(weights_only=True)``
with an allow-list of exactly the non-tensor globals that fairseq checkpoints contain, each replaced by an inert
stand-in that only records its pickled state (fairseq's ``Dictionary``, the omegaconf containers of older
hydra-era files) or by a harmless standard class (``argparse.Namespace`` of pre-hydra files). Any other global
is refused by name, so loading a checkpoint never runs code from it.

Formats handled: ``cfg`` as a plain dict (fairseq 0.12 trainers) or a pickled omegaconf ``DictConfig`` (older
hydra trainers), legacy ``args`` Namespaces, fp16 or fp32 tensors, weight-normed positional conv stored as
``weight_g``/``weight_v`` or as a parametrization, GroupNorm (base) and layer-norm (large) feature extractors.
"""
from __future__ import annotations

import argparse
import ast
import collections
import os
import pickle
import re
import typing
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from seqattn.data.text import BLANK, UNK, WORD_BOUNDARY, CharVocabulary
from seqattn.errors import SeqattnError
from seqattn.models.wav2vec2 import Wav2Vec2Config
from seqattn.nn import AttentionConfig

from .names import compile_names, rename


class FairseqImportError(SeqattnError, ValueError):
    """A fairseq file that cannot be converted; the message says which file and why."""


class _Recorded:
    """Stand-in for a class fairseq pickled: unpickling only fills ``__dict__`` (no methods run)."""

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} stand-in>"


def _stand_in(qualified_name: str) -> tuple[type, str]:
    return type(qualified_name.rsplit(".", 1)[1], (_Recorded,), {"__module__": __name__}), qualified_name


# Everything beyond tensors and plain containers that fairseq checkpoints hold, and nothing else.
_STAND_INS = [
    _stand_in("fairseq.data.dictionary.Dictionary"),  # task_state["target_dictionary"] of CTC checkpoints
    _stand_in("omegaconf.dictconfig.DictConfig"),  # cfg of hydra-era trainers (before fairseq 0.12)
    _stand_in("omegaconf.listconfig.ListConfig"),
    _stand_in("omegaconf.base.ContainerMetadata"),
    _stand_in("omegaconf.base.Metadata"),
    _stand_in("omegaconf.nodes.AnyNode"),
]
_SAFE_CLASSES = [argparse.Namespace, typing.Any, collections.defaultdict, dict, list, int]


def load_fairseq_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's top-level dict, with omegaconf/Namespace configs turned into plain dicts."""
    path = Path(path)
    if not path.is_file():
        raise FairseqImportError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(_STAND_INS + _SAFE_CLASSES):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        found = re.search(r"GLOBAL (\S+)", message)  # torch names the refused global in a few phrasings
        if found:
            name = found.group(1)
            raise FairseqImportError(
                f"{path}: refusing to load: the file needs the Python global {name}, which is not one of the "
                "classes fairseq checkpoints contain (loading it could run arbitrary code)") from None
        raise FairseqImportError(f"{path}: not a readable checkpoint: {message.splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise FairseqImportError(f"{path}: not a readable (or a truncated) PyTorch checkpoint: "
                                 f"{str(error).splitlines()[0]}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise FairseqImportError(f"{path}: not a fairseq checkpoint (no 'model' state dict at the top level)")
    return {key: (value if key == "model" else _plain(value)) for key, value in state.items()}


def _plain(value):
    """Recorded omegaconf containers / Namespaces -> dicts, lists and values."""
    if isinstance(value, _Recorded):
        fields = vars(value)
        name = type(value).__name__
        if name == "DictConfig":
            content = fields.get("_content")
            return {k: _plain(v) for k, v in content.items()} if isinstance(content, dict) else None
        if name == "ListConfig":
            content = fields.get("_content")
            return [_plain(v) for v in content] if isinstance(content, list) else None
        if name == "AnyNode":
            return _plain(fields.get("_val"))
        return value  # a Dictionary: read by _dictionary_symbols
    if isinstance(value, argparse.Namespace):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _conv_layers(spec) -> list[list[int]]:
    """fairseq's ``conv_feature_layers`` string (a Python list expression) -> [[dim, kernel, stride], ...].

    Evaluated by walking its syntax tree: only list/tuple literals of integers, ``+`` and ``*``.
    """
    if isinstance(spec, list):
        return [list(map(int, layer)) for layer in spec]

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [value(n) for n in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise FairseqImportError(f"conv_feature_layers {spec!r}: unsupported expression")

    try:
        tree = ast.parse(str(spec), mode="eval").body
    except SyntaxError:
        raise FairseqImportError(f"conv_feature_layers {spec!r} is not a list expression") from None
    return [list(map(int, layer)) for layer in value(tree)]


@dataclass
class FairseqModel:
    kind: str  # "pretraining" or "ctc"
    config: Wav2Vec2Config
    state_dict: dict  # seqattn parameter names -> float32 tensors
    vocabulary: CharVocabulary | None  # CTC only, in seqattn order
    output_order: list[int] | None  # seqattn output i = fairseq output output_order[i]


def _model_and_task_config(checkpoint: dict, path) -> tuple[dict, dict, dict | None]:
    """(encoder model cfg, pretraining task cfg, fine-tuning cfg or None) from ``cfg`` or legacy ``args``."""
    cfg = checkpoint.get("cfg")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        model, task = cfg["model"], cfg.get("task") or {}
        w2v_args = model.get("w2v_args")
        if w2v_args:  # a fine-tuned model: the encoder's own config sits in w2v_args
            if not isinstance(w2v_args.get("model"), dict):  # pre-hydra w2v_args stored inside a hydra cfg
                return w2v_args, w2v_args, {**model, "normalize": task.get("normalize", model.get("normalize"))}
            return w2v_args["model"], w2v_args.get("task") or {}, {**model, "normalize": task.get("normalize")}
        return model, task, None
    args = checkpoint.get("args")
    if isinstance(args, dict):  # pre-hydra: one flat namespace for model and task
        w2v_args = args.get("w2v_args")
        if w2v_args:
            return w2v_args, w2v_args, args
        return args, args, None
    raise FairseqImportError(f"{path}: neither 'cfg' nor 'args' holds a model configuration")


_UNSUPPORTED = {  # fairseq options that change the network in ways seqattn does not implement
    "layer_type": ("transformer",), "activation_fn": ("gelu",), "pos_conv_depth": (1, None),
    "quantizer_depth": (1, None), "quantize_input": (False, None), "target_glu": (False, None),
    "pos_enc_type": ("abs", None),
}


def _config(model: dict, task: dict, finetune: dict | None, vocab_size: int, path) -> Wav2Vec2Config:
    name = model.get("_name", model.get("arch", "wav2vec2"))
    if name not in ("wav2vec2", None) and not str(name).startswith("wav2vec"):
        raise FairseqImportError(f"{path}: model {name!r} is not wav2vec 2.0")
    for key, allowed in _UNSUPPORTED.items():
        if key in model and model[key] not in allowed:
            raise FairseqImportError(f"{path}: {key}={model[key]!r} is not supported (only {allowed[0]!r})")
    tuning = finetune or {}

    def pick(key, default, fine_key=None):  # fine-tuning settings override the pretraining ones, as in fairseq
        if finetune is not None and (fine_key or key) in tuning and tuning[fine_key or key] is not None:
            return tuning[fine_key or key]
        return model.get(key, default)

    normalize = (finetune or {}).get("normalize")
    if normalize is None:
        normalize = task.get("normalize", False)
    return Wav2Vec2Config(
        conv_layers=_conv_layers(model.get("conv_feature_layers",
                                           "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2")),
        extractor_mode=model.get("extractor_mode", "default"),
        conv_bias=bool(model.get("conv_bias", False)),
        embed_dim=int(model.get("encoder_embed_dim", 768)),
        ffn_dim=int(model.get("encoder_ffn_embed_dim", 3072)),
        num_layers=int(model.get("encoder_layers", 12)),
        attention=AttentionConfig(num_heads=int(model.get("encoder_attention_heads", 12))),
        layer_norm_first=bool(model.get("layer_norm_first", False)),
        conv_pos=int(model.get("conv_pos", 128)),
        conv_pos_groups=int(model.get("conv_pos_groups", 16)),
        normalize_waveform=bool(normalize),
        dropout=float(pick("dropout", 0.1)),
        activation_dropout=float(pick("activation_dropout", 0.0)),
        dropout_input=float(pick("dropout_input", 0.1)),
        dropout_features=float(model.get("dropout_features", 0.1)),
        layerdrop=float(pick("encoder_layerdrop", 0.05, "layerdrop")),
        feature_grad_mult=float(pick("feature_grad_mult", 0.1)),
        final_dim=int(model.get("final_dim", 256)),
        latent_vars=int(model.get("latent_vars", 320)),
        latent_groups=int(model.get("latent_groups", 2)),
        latent_dim=int(model.get("latent_dim", 0)),
        latent_temp=[float(t) for t in _plain(model.get("latent_temp", [2.0, 0.5, 0.999995]))],
        mask_prob=float(pick("mask_prob", 0.65)),
        mask_length=int(pick("mask_length", 10)),
        mask_channel_prob=float(pick("mask_channel_prob", 0.0)),
        mask_channel_length=int(pick("mask_channel_length", 10)),
        num_negatives=int(model.get("num_negatives", 100)),
        logit_temp=float(model.get("logit_temp", 0.1)),
        vocab_size=vocab_size,
        final_dropout=float(tuning.get("final_dropout", 0.0) or 0.0),
    )


# (fairseq name pattern, seqattn name); {i} a layer index, {p} weight/bias, {m} an attention projection.
_NAMES = [
    ("feature_extractor.conv_layers.{i}.0.weight", "wav2vec2.feature_extractor.conv_layers.{i}.conv.weight"),
    ("feature_extractor.conv_layers.{i}.0.bias", "wav2vec2.feature_extractor.conv_layers.{i}.conv.bias"),
    ("feature_extractor.conv_layers.{i}.2.{p}", "wav2vec2.feature_extractor.conv_layers.{i}.norm.{p}"),  # GroupNorm
    ("feature_extractor.conv_layers.{i}.2.1.{p}", "wav2vec2.feature_extractor.conv_layers.{i}.norm.{p}"),  # LN
    ("layer_norm.{p}", "wav2vec2.feature_norm.{p}"),
    ("post_extract_proj.{p}", "wav2vec2.feature_projection.{p}"),
    ("mask_emb", "wav2vec2.mask_emb"),
    ("encoder.pos_conv.0.weight_g", "wav2vec2.encoder.pos_conv.weight_g"),
    ("encoder.pos_conv.0.weight_v", "wav2vec2.encoder.pos_conv.weight_v"),
    ("encoder.pos_conv.0.parametrizations.weight.original0", "wav2vec2.encoder.pos_conv.weight_g"),
    ("encoder.pos_conv.0.parametrizations.weight.original1", "wav2vec2.encoder.pos_conv.weight_v"),
    ("encoder.pos_conv.0.bias", "wav2vec2.encoder.pos_conv.bias"),
    ("encoder.layer_norm.{p}", "wav2vec2.encoder.layer_norm.{p}"),
    ("encoder.layers.{i}.self_attn.{m}.{p}", "wav2vec2.encoder.layers.{i}.attention.{m}.{p}"),
    ("encoder.layers.{i}.self_attn_layer_norm.{p}", "wav2vec2.encoder.layers.{i}.attention_norm.{p}"),
    ("encoder.layers.{i}.fc1.{p}", "wav2vec2.encoder.layers.{i}.ffn.fc1.{p}"),
    ("encoder.layers.{i}.fc2.{p}", "wav2vec2.encoder.layers.{i}.ffn.fc2.{p}"),
    ("encoder.layers.{i}.final_layer_norm.{p}", "wav2vec2.encoder.layers.{i}.final_norm.{p}"),
    ("quantizer.vars", "quantizer.codevectors"),
    ("quantizer.weight_proj.{p}", "quantizer.weight_proj.{p}"),
    ("project_q.{p}", "project_q.{p}"),
    ("final_proj.{p}", "final_proj.{p}"),
]


_TABLE = compile_names(_NAMES)


# Buffers / modules fairseq keeps that carry no learned weights seqattn needs.
_IGNORED_SUFFIXES = ("_float_tensor", "num_updates")
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


def _dictionary_symbols(checkpoint: dict, dict_path, path) -> list[str] | None:
    """The CTC target dictionary's symbols (fairseq order: <s> <pad> </s> <unk>, then the file's symbols)."""
    if dict_path is not None:
        dict_path = Path(dict_path)
        if not dict_path.is_file():
            raise FairseqImportError(f"{dict_path}: no such dictionary file")
        symbols = list(_SPECIALS)
        for number, line in enumerate(dict_path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split(" ")
            if len(parts) < 2 or not parts[-1].lstrip("#").isdigit() and parts[-1] != "#fairseq:overwrite":
                raise FairseqImportError(f"{dict_path}:{number}: expected '<symbol> <count>', got {line!r}")
            symbols.append(parts[0])
        return symbols
    dictionary = (checkpoint.get("task_state") or {}).get("target_dictionary")
    if isinstance(dictionary, _Recorded) and isinstance(vars(dictionary).get("symbols"), list):
        return list(vars(dictionary)["symbols"])
    return None


def ctc_vocabulary(symbols: list[str]) -> tuple[CharVocabulary, list[int]]:
    """fairseq target dictionary -> (seqattn vocabulary, output order).

    fairseq's CTC blank is ``<s>`` at index 0; its ``<unk>`` is index 3 and ``|`` (the word boundary of .ltr
    labels) comes with the data. seqattn wants ``<blank> <unk> |`` first, so the head's rows are permuted:
    seqattn output i is fairseq output ``order[i]``. ``<pad>`` and ``</s>`` are kept (at the end, so the
    softmax is unchanged) and decode to nothing.
    """
    if symbols[:4] != list(_SPECIALS):
        raise FairseqImportError(f"target dictionary does not start with {' '.join(_SPECIALS)}: {symbols[:4]}")
    if WORD_BOUNDARY not in symbols:
        raise FairseqImportError("target dictionary has no word boundary symbol '|' (letter targets expected)")
    index = {s: i for i, s in enumerate(symbols)}
    rest = [i for i in range(4, len(symbols)) if symbols[i] != WORD_BOUNDARY]
    order = [0, index["<unk>"], index[WORD_BOUNDARY]] + rest + [index["<pad>"], index["</s>"]]
    tokens = [BLANK, UNK, WORD_BOUNDARY] + [symbols[i] for i in rest] + ["<pad>", "</s>"]
    return CharVocabulary(tokens, strip_punctuation=False, lowercase=False), order


def read_fairseq(path: str | os.PathLike, dict_path: str | os.PathLike | None = None) -> FairseqModel:
    """Read a fairseq wav2vec 2.0 pretraining or CTC checkpoint into seqattn's config and parameter names."""
    checkpoint = load_fairseq_checkpoint(path)
    weights = checkpoint["model"]
    ctc = any(key.startswith("w2v_encoder.") for key in weights)
    model_cfg, task_cfg, finetune_cfg = _model_and_task_config(checkpoint, path)
    state, unknown = {}, []
    for key, tensor in weights.items():
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        if not isinstance(tensor, torch.Tensor):
            unknown.append(key)
            continue
        if ctc:
            if key in ("w2v_encoder.proj.weight", "w2v_encoder.proj.bias"):
                state["head." + key.rsplit(".", 1)[1]] = tensor
                continue
            inner = key.removeprefix("w2v_encoder.w2v_model.")
            name = rename(inner, _TABLE) if inner != key else None
        else:
            name = rename(key, _TABLE)
        if name is None:
            unknown.append(key)
        else:
            state[name] = tensor.float()  # fp16 checkpoints become float32 models
    if unknown:
        raise FairseqImportError(f"{path}: parameters with no seqattn counterpart (not a wav2vec 2.0 "
                                 f"model?): {', '.join(sorted(unknown)[:20])}{' ...' if len(unknown) > 20 else ''}")
    vocabulary = order = None
    vocab_size = 0
    if ctc:
        if "head.weight" not in state:
            raise FairseqImportError(f"{path}: a CTC checkpoint without w2v_encoder.proj (the output layer)")
        symbols = _dictionary_symbols(checkpoint, dict_path, path)
        if symbols is None:
            raise FairseqImportError(f"{path}: the checkpoint holds no target dictionary; pass --dict dict.ltr.txt")
        outputs = state["head.weight"].shape[0]
        if len(symbols) != outputs:
            raise FairseqImportError(f"{path}: the dictionary has {len(symbols)} symbols but the model has "
                                     f"{outputs} outputs")
        vocabulary, order = ctc_vocabulary(symbols)
        state["head.weight"], state["head.bias"] = state["head.weight"][order], state["head.bias"][order]
        vocab_size = outputs
        # Pretraining-only modules (quantizer, projections) were removed by fairseq's fine-tuning.
    config = _config(model_cfg, task_cfg, finetune_cfg, vocab_size, path)
    return FairseqModel("ctc" if ctc else "pretraining", config, state, vocabulary, order)


def build_seqattn_model(imported: FairseqModel, path="checkpoint"):
    """Instantiate the seqattn model and load the converted weights; missing or extra keys raise, listed."""
    from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPretraining

    model_class = Wav2Vec2ForCTC if imported.kind == "ctc" else Wav2Vec2ForPretraining
    try:
        imported.config.validate()
        with torch.device("meta"):  # shapes only: a cfg that disagrees with the weights allocates nothing
            skeleton = model_class(imported.config)
    except (ValueError, TypeError, RuntimeError) as error:
        raise FairseqImportError(f"{path}: its cfg describes a model that cannot be built: {error}") from None
    shapes = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    expected = set(shapes)
    given = set(imported.state_dict)
    missing, extra = sorted(expected - given), sorted(given - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing from the checkpoint: {', '.join(missing)}")
        if extra:
            parts.append(f"not expected by the model: {', '.join(extra)}")
        raise FairseqImportError(f"{path}: " + "; ".join(parts))
    for name, tensor in imported.state_dict.items():
        if tuple(tensor.shape) != shapes[name]:
            raise FairseqImportError(f"{path}: {name} has shape {tuple(tensor.shape)}, the config implies "
                                     f"{shapes[name]}")
    model = model_class(imported.config)
    model.load_state_dict(imported.state_dict)
    return model.eval()
