"""Directory-level conversions behind ``seqattn convert``: fairseq checkpoint -> seqattn model directory, and
HF ``save_pretrained`` directories <-> seqattn model directories.

Every output directory is written through :func:`seqattn.models.io.save_model` or :func:`atomic_directory`:
it appears complete or not at all. HF directories hold ``config.json``, ``model.safetensors``,
``preprocessor_config.json`` and, for CTC models, ``vocab.json``/``tokenizer_config.json``/
``special_tokens_map.json``. HF's CTC blank is its ``pad_token`` (index ``pad_token_id``), seqattn's is index 0
named ``<blank>``: exporting names the blank ``<pad>``, importing puts the pad token first.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from seqattn.data.text import BLANK, SILENT_TOKENS, UNK, WORD_BOUNDARY, CharVocabulary
from seqattn.data.vocabulary import VOCAB_FILE, load_vocabulary
from seqattn.errors import SeqattnError
from seqattn.models.io import ModelDirError, load_model, save_model
from seqattn.models.validation import WeightsMismatch, check_weights, describe_state
from seqattn.utils.atomic import atomic_directory

from .fairseq import FairseqImportError, build_seqattn_model, read_fairseq
from .hf import config_from_hf, config_to_hf, state_dict_from_hf, state_dict_to_hf

HF_ARCHITECTURES = {"wav2vec2_ctc": "Wav2Vec2ForCTC", "wav2vec2_pretraining": "Wav2Vec2ForPreTraining"}


class ConversionError(SeqattnError, ValueError):
    """A conversion that cannot be done; the message names the file and the reason."""


def _save_with_vocabulary(model, out_dir, vocabulary: CharVocabulary | None, note: str) -> Path:
    extra = {VOCAB_FILE: vocabulary.to_json()} if vocabulary is not None else {}
    save_model(model, out_dir, extra_files=extra, notes=f"Converted from {note}.")
    return Path(out_dir)


def convert_fairseq(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                    dict_path: str | os.PathLike | None = None) -> Path:
    """fairseq wav2vec 2.0 pretraining or CTC checkpoint -> seqattn model directory."""
    try:
        imported = read_fairseq(checkpoint, dict_path)
        model = build_seqattn_model(imported, checkpoint)
    except FairseqImportError as error:
        raise ConversionError(str(error)) from None
    note = f"fairseq checkpoint {Path(checkpoint).resolve()} ({imported.kind})"
    if imported.output_order is not None:
        note += f"; seqattn output i = fairseq output {imported.output_order}[i]"
    return _save_with_vocabulary(model, out_dir, imported.vocabulary, note)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConversionError(f"{path} is not valid JSON: {error}") from None


def _load_weights_file(path: Path) -> dict:
    """One safetensors file, or a PyTorch pickle read with ``weights_only`` (no code runs)."""
    if not path.is_file():
        raise ConversionError(f"{path} is missing")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors' own error types
            raise ConversionError(f"{path}: cannot be read: {str(error).splitlines()[0]}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # broad on purpose: any unpickling failure is reported as a bad file
        raise ConversionError(f"{path}: cannot be read safely: {str(error).splitlines()[0]}") from None


def _hf_weights(hf_dir: Path) -> dict:
    """The weights of an HF directory: one file, or the shards its ``*.index.json`` maps (safetensors first)."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (hf_dir / single).is_file():
            return _load_weights_file(hf_dir / single)
        if (hf_dir / index).is_file():
            weight_map = _read_json(hf_dir / index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ConversionError(f"{hf_dir / index}: lacks a 'weight_map' of tensor names to shard files")
            weights = {}
            for shard in sorted(set(weight_map.values())):
                if Path(shard).name != shard:
                    raise ConversionError(f"{hf_dir / index}: shard {shard!r} is not a file name in {hf_dir}")
                weights.update(_load_weights_file(hf_dir / shard))
            missing = sorted(set(weight_map) - set(weights))
            if missing:
                raise ConversionError(f"{hf_dir / index}: the shards lack {len(missing)} mapped tensor(s), e.g. "
                                      f"{missing[0]}")
            return weights
    raise ConversionError(f"{hf_dir} holds neither model.safetensors nor pytorch_model.bin (nor a sharded index)")


def resolve_hf_source(source: str | os.PathLike) -> Path:
    """A local HF directory as it is, or a hub repo id (``facebook/wav2vec2-base-960h``) resolved through
    ``huggingface_hub``'s cache: with ``HF_HUB_OFFLINE=1`` only the local cache is read."""
    path = Path(source)
    if path.is_dir():
        return path
    text = str(source)
    if text.count("/") != 1 or text.startswith((".", "/", "~")) or path.exists():
        raise ConversionError(f"{source}: no such directory (and not a hub repo id like org/name)")
    from seqattn.utils.extras import require

    hub = require("huggingface_hub", "hub", f"importing {text} from the HF hub or its cache")
    patterns = ["*.json", "*.safetensors", "*.bin", "*.txt"]
    try:
        return Path(hub.snapshot_download(text, allow_patterns=patterns))
    except Exception as error:  # LocalEntryNotFoundError, RepositoryNotFoundError, connection errors, ...
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        where = f"the HF cache ({hub.constants.HF_HUB_CACHE})"
        hint = (f"it is not in {where} and HF_HUB_OFFLINE is set; download it first (hf download {text}) or "
                "give a local directory") if offline else f"neither {where} nor the hub could provide it"
        raise ConversionError(f"{text}: {hint} ({type(error).__name__})") from None


def hf_vocabulary(hf_dir: Path, hf_config: dict, language: str | None = None) -> tuple[CharVocabulary, list[int]]:
    """HF ``vocab.json`` -> (seqattn vocabulary, output order: seqattn output i = HF output order[i]).

    A per-language vocabulary (MMS's ``{language: {token: id}}``) needs ``language`` to pick one."""
    vocab = _read_json(hf_dir / "vocab.json")
    if vocab and all(isinstance(v, dict) for v in vocab.values()):  # multi-language layout {lang: {token: id}}
        if language is None:
            raise ConversionError(f"{hf_dir / 'vocab.json'} holds one vocabulary per language ({len(vocab)}, e.g. "
                                  f"{', '.join(sorted(vocab)[:5])}); choose one with --language")
        if language not in vocab:
            raise ConversionError(f"{hf_dir / 'vocab.json'} has no vocabulary for language {language!r}")
        vocab = vocab[language]
    elif language is not None:
        raise ConversionError(f"{hf_dir / 'vocab.json'} holds a single vocabulary; --language applies only to "
                              "per-language (MMS-style) vocabularies")
    tokenizer = _read_json(hf_dir / "tokenizer_config.json") if (hf_dir / "tokenizer_config.json").is_file() else {}
    symbols = [None] * len(vocab)
    for token, index in vocab.items():
        if not 0 <= index < len(vocab) or symbols[index] is not None:
            raise ConversionError(f"{hf_dir / 'vocab.json'}: ids are not a permutation of 0..{len(vocab) - 1}")
        symbols[index] = token
    pad = tokenizer.get("pad_token", "<pad>")
    pad_id = hf_config.get("pad_token_id", vocab.get(pad, 0))
    unk = tokenizer.get("unk_token", "<unk>")
    delimiter = tokenizer.get("word_delimiter_token", WORD_BOUNDARY)
    for name, token in (("unk", unk), ("word delimiter", delimiter)):
        if token not in vocab:
            raise ConversionError(f"{hf_dir / 'vocab.json'}: the {name} token {token!r} is not in the vocabulary")
    special = {pad_id, vocab[unk], vocab[delimiter]}
    silent = [i for i, s in enumerate(symbols) if i not in special and s in SILENT_TOKENS]
    rest = [i for i in range(len(symbols)) if i not in special and i not in silent]
    order = [pad_id, vocab[unk], vocab[delimiter]] + rest + silent
    tokens = [BLANK, UNK, WORD_BOUNDARY] + [symbols[i] for i in rest] + [symbols[i] for i in silent]
    return CharVocabulary(tokens, strip_punctuation=False, lowercase=bool(tokenizer.get("do_lower_case", False))), order


def hf_import(source: str | os.PathLike, out_dir: str | os.PathLike, language: str | None = None) -> Path:
    """HF ``Wav2Vec2ForCTC`` / ``Wav2Vec2ForPreTraining`` directory or hub repo id -> seqattn model directory.

    Sharded weights (``model.safetensors.index.json``) are joined; ``language`` picks one vocabulary of a
    per-language ``vocab.json``. MMS's per-language attention adapters are refused: seqattn's layers have none.
    """
    from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPretraining

    hf_dir = resolve_hf_source(source)
    hf_config = _read_json(hf_dir / "config.json")
    if hf_config.get("adapter_attn_dim"):
        adapters = sorted(p.name for p in hf_dir.glob("adapter.*.safetensors"))[:3]
        raise ConversionError(f"{hf_dir / 'config.json'}: adapter_attn_dim={hf_config['adapter_attn_dim']}: MMS-style "
                              "per-language attention adapters" + (f" ({', '.join(adapters)}, ...)" if adapters else "")
                              + " are not supported: seqattn's wav2vec2 layers have no adapter modules, so the "
                              "model would compute a different function")
    architectures = hf_config.get("architectures") or []
    if hf_config.get("model_type") != "wav2vec2" or not set(architectures) & {"Wav2Vec2ForCTC",
                                                                              "Wav2Vec2ForPreTraining"}:
        raise ConversionError(f"{hf_dir / 'config.json'}: model_type {hf_config.get('model_type')!r} / architectures "
                              f"{architectures} is not a wav2vec2 CTC or pretraining model")
    ctc = "Wav2Vec2ForCTC" in architectures
    try:
        config = config_from_hf(hf_config)
    except KeyError as error:
        raise ConversionError(f"{hf_dir / 'config.json'}: lacks the key {error}") from None
    except ValueError as error:
        raise ConversionError(f"{hf_dir / 'config.json'}: {error}") from None
    try:
        weights = state_dict_from_hf(_hf_weights(hf_dir))
    except (ValueError, KeyError) as error:
        raise ConversionError(f"{hf_dir}: {error}") from None
    preprocessor = hf_dir / "preprocessor_config.json"
    config.normalize_waveform = bool(_read_json(preprocessor).get("do_normalize",
                                                                  False)) if preprocessor.is_file() else False
    vocabulary = None
    if ctc:
        vocabulary, order = hf_vocabulary(hf_dir, hf_config, language)
        if "head.weight" not in weights or weights["head.weight"].shape[0] != len(order):
            raise ConversionError(f"{hf_dir}: lm_head does not match the {len(order)} entries of vocab.json")
        weights["head.weight"], weights["head.bias"] = weights["head.weight"][order], weights["head.bias"][order]
        config.vocab_size = len(order)
        weights = {k: v for k, v in weights.items() if not k.startswith(("quantizer.", "project_q.", "final_proj."))}
    model_class = Wav2Vec2ForCTC if ctc else Wav2Vec2ForPretraining
    try:
        config.validate()
        with torch.device("meta"):  # shapes only: a config that disagrees with the weights allocates nothing
            skeleton = model_class(config)
        # HF CTC models trained without time masking have no masked_spec_embed; inference never uses it
        check_weights(skeleton, describe_state(weights), hf_config, str(hf_dir / "config.json"),
                      "the HF checkpoint", optional=frozenset({"wav2vec2.mask_emb"}))
    except WeightsMismatch as error:
        raise ConversionError(f"{hf_dir}: {error}") from None
    except (ValueError, RuntimeError) as error:
        raise ConversionError(f"{hf_dir / 'config.json'}: {error}") from None
    model = model_class(config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if ctc:  # HF CTC models trained without time masking have no masked_spec_embed; inference never uses it
        missing = [k for k in missing if k != "wav2vec2.mask_emb"]
    if missing or unexpected:
        raise ConversionError(f"{hf_dir}: missing weights {missing}, unexpected weights {unexpected}")
    origin = f"HF directory {hf_dir.resolve()}" if Path(source).is_dir() else f"HF hub repo {source} ({hf_dir})"
    if language is not None:
        origin += f", vocabulary of language {language}"
    return _save_with_vocabulary(model.eval(), out_dir, vocabulary, origin)


def hf_export(model_dir: str | os.PathLike, hf_dir: str | os.PathLike) -> Path:
    """seqattn model directory -> HF ``save_pretrained`` layout that ``transformers`` loads directly.

    Refused for models with local/routing/other non-full attention: HF wav2vec2 has only full attention and
    would silently compute a different function.
    """
    from safetensors.torch import save_file

    model = load_model(model_dir)
    model_type = "wav2vec2_ctc" if hasattr(model, "head") else "wav2vec2_pretraining"
    try:
        values = config_to_hf(model.config)
    except ValueError as error:
        raise ConversionError(f"{model_dir}: cannot export to HF: {error}") from None
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    hf_config = {"model_type": "wav2vec2", "architectures": [HF_ARCHITECTURES[model_type]], **values}
    files: dict[str, str] = {}
    if model_type == "wav2vec2_ctc":
        vocabulary = load_vocabulary(Path(model_dir) / VOCAB_FILE)
        names = list(vocabulary.tokens)
        names[0] = "<pad>"  # HF's CTC blank is its pad token
        names = [("<s>" if token == "<pad>" and i > 0 else token) for i, token in enumerate(names)]
        if len(set(names)) != len(names):
            raise ConversionError(f"{model_dir}: vocabulary tokens collide after renaming the blank to <pad>")
        hf_config.update(vocab_size=len(names), pad_token_id=0, ctc_loss_reduction="mean")
        files["vocab.json"] = json.dumps({token: i for i, token in enumerate(names)}, ensure_ascii=False, indent=1)
        files["tokenizer_config.json"] = json.dumps({
            "tokenizer_class": "Wav2Vec2CTCTokenizer", "pad_token": "<pad>", "unk_token": UNK,
            "word_delimiter_token": WORD_BOUNDARY, "do_lower_case": vocabulary.lowercase,
            "bos_token": None, "eos_token": None}, indent=1)
        files["special_tokens_map.json"] = json.dumps({"pad_token": "<pad>", "unk_token": UNK}, indent=1)
    else:
        state = {k: v for k, v in state.items() if k != "head.weight"}
    files["config.json"] = json.dumps(hf_config, indent=1)
    files["preprocessor_config.json"] = json.dumps({
        "feature_extractor_type": "Wav2Vec2FeatureExtractor", "processor_class": "Wav2Vec2Processor",
        "feature_size": 1, "sampling_rate": 16000, "padding_value": 0.0, "padding_side": "right",
        "do_normalize": bool(model.config.normalize_waveform),
        "return_attention_mask": model.config.extractor_mode == "layer_norm"}, indent=1)
    try:
        hf_state = state_dict_to_hf(state)
    except ValueError as error:
        raise ConversionError(f"{model_dir}: {error}") from None
    with atomic_directory(hf_dir) as tmp:
        save_file(hf_state, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
    return Path(hf_dir)


__all__ = ["ConversionError", "ModelDirError", "convert_fairseq", "hf_export", "hf_import", "hf_vocabulary"]
