"""`seqattn convert`: fairseq import used end to end, HF import/export checked by transformers itself."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import make_data_dir, tone_wave

from seqattn import load_model
from seqattn.cli.main import main as cli_main
from seqattn.data.text import CharVocabulary
from seqattn.models.io import save_model
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPretraining, tiny
from seqattn.nn import AttentionConfig
from seqattn.nn.heads import LocalHeads

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "fairseq"
needs_fixtures = pytest.mark.skipif(not (FIXTURES / "inputs.npz").is_file(),
                                    reason=f"fairseq reference fixtures not found at {FIXTURES} (../shared is absent)")


@needs_fixtures
def test_converted_fairseq_ctc_model_transcribes_and_keeps_fairseq_logits(tmp_path, capsys):
    out = tmp_path / "indic_ctc"
    assert cli_main(["convert", "fairseq", str(FIXTURES / "w2v2_ctc_base_like.pt"), str(out)]) == 0
    assert {"config.json", "model.safetensors", "tokens.json", "README.md"} <= {p.name for p in out.iterdir()}
    model = load_model(out)
    inputs = np.load(FIXTURES / "inputs.npz")
    reference = np.load(FIXTURES / "w2v2_ctc_base_like.npz")["nopad.encoder_out"]  # (T, B, V) fairseq order
    order = [0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2]
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(inputs["source"]))
    theirs = torch.from_numpy(reference).transpose(0, 1)[..., order]
    assert (logits - theirs).abs().max() <= 1e-4  # survives the safetensors round trip
    audio = tmp_path / "speech.wav"
    sf.write(audio, tone_wave(2.0, 22050, np.random.default_rng(0)), 22050)
    capsys.readouterr()
    assert cli_main(["transcribe", str(out), str(audio), "--output-dir", str(tmp_path / "tr"), "--quiet",
                     "--output-format", "json"]) == 0
    text = json.loads((tmp_path / "tr" / "speech.json").read_text(encoding="utf-8"))["text"]
    assert text and set(text.replace("<unk>", "")) <= set("ETAONIH ")  # <pad> and </s> write nothing


@needs_fixtures
def test_finetune_continues_from_a_converted_fairseq_model(tmp_path):
    from seqattn.train.config_io import load_config
    from seqattn.train.finetune import FinetuneConfig, train

    converted = tmp_path / "pretrained"
    assert cli_main(["convert", "fairseq", str(FIXTURES / "w2v2_large_like.pt"), str(converted)]) == 0
    train_dir = make_data_dir(tmp_path, "train", 6, "hi", seconds=(1.0, 1.4), texts=["नमस्ते भारत", "हिंदी"])
    config = load_config(FinetuneConfig, str(REPO / "recipes" / "wav2vec2" / "finetune_tiny.yaml"), [
        f"init={converted}", f"data.train=[{{path: {train_dir}}}]", f"run.output_dir={tmp_path / 'ft'}",
        "optim.max_updates=2", "run.save_every=2", "validate_every=0", "freeze_updates=0",
        "run.tensorboard=false", "data.max_tokens=48000"])
    best = train(config)
    tuned = load_model(best)
    assert tuned.config.normalize_waveform and tuned.config.layer_norm_first  # fairseq settings carried over
    assert tuned.config.embed_dim == 64


@needs_fixtures
def test_failed_conversion_writes_nothing(tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_bytes((FIXTURES / "w2v2_base_like.pt").read_bytes()[:5000])
    out = tmp_path / "out"
    assert cli_main(["convert", "fairseq", str(broken), str(out)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == [broken]


transformers = pytest.importorskip("transformers", reason="transformers is a test-only reference dependency")

STYLES = {
    "base": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    "large": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}
HF_VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "क": 5, "ा": 6, "म": 7, "ल": 8}


def _hf_ctc_dir(tmp_path, style):
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=len(HF_VOCAB), pad_token_id=0,
        **STYLES[style])
    torch.manual_seed(0)
    model = transformers.Wav2Vec2ForCTC(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    directory = tmp_path / f"hf_{style}"
    model.save_pretrained(directory)
    (directory / "vocab.json").write_text(json.dumps(HF_VOCAB, ensure_ascii=False), encoding="utf-8")
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(directory / "vocab.json"), word_delimiter_token="|")
    tokenizer.save_pretrained(directory)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=style == "large").save_pretrained(directory)
    return model, directory


@pytest.mark.parametrize("style", ["base", "large"])
def test_hf_import_gives_the_same_logits_and_hidden_states(style, tmp_path):
    hf, hf_dir = _hf_ctc_dir(tmp_path, style)
    assert cli_main(["convert", "hf-import", str(hf_dir), str(tmp_path / "ours")]) == 0
    ours = load_model(tmp_path / "ours")
    vocab = CharVocabulary.load(tmp_path / "ours" / "tokens.json")
    assert vocab.tokens[:3] == ["<blank>", "<unk>", "|"] and vocab.tokens[-2:] == ["<s>", "</s>"]
    order = [0, 3, 4, 5, 6, 7, 8, 1, 2]  # seqattn output i = HF output order[i]; HF's pad (0) is the blank
    assert ours.config.normalize_waveform == (style == "large")
    waves = torch.randn(2, 9000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf(waves, output_hidden_states=True)
        logits, _ = ours(waves)
        layers, _ = ours.extract_features(waves)
    assert (logits - ref.logits[..., order]).abs().max() <= 1e-4
    for i, layer in enumerate(layers):
        assert (layer - ref.hidden_states[i + 1]).abs().max() <= 1e-4, f"layer {i}"


def _seqattn_ctc_dir(tmp_path, **config):
    vocab = CharVocabulary.build(["कमला मकान"])
    torch.manual_seed(4)
    model = Wav2Vec2ForCTC(tiny(vocab_size=len(vocab), **config)).eval()
    return save_model(model, tmp_path / "seqattn_ctc", extra_files={"tokens.json": vocab.to_json()}), model, vocab


@pytest.mark.parametrize("style", ["default", "layer_norm"])
def test_hf_export_loads_in_transformers_with_the_same_logits(style, tmp_path):
    model_dir, ours, vocab = _seqattn_ctc_dir(tmp_path, extractor_mode=style, layer_norm_first=style == "layer_norm",
                                              conv_bias=style == "layer_norm")
    assert cli_main(["convert", "hf-export", str(model_dir), str(tmp_path / "hf")]) == 0
    hf = transformers.Wav2Vec2ForCTC.from_pretrained(tmp_path / "hf").eval()
    processor = transformers.Wav2Vec2Processor.from_pretrained(tmp_path / "hf")
    waves = torch.randn(2, 8000, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        theirs = hf(waves).logits
        mine, _ = ours(waves)
    assert (theirs - mine).abs().max() <= 1e-4
    assert hf.config.pad_token_id == 0 and processor.tokenizer.pad_token == "<pad>"
    ids = [vocab.index[c] for c in "कमला"] + [vocab.index["|"]] + [vocab.index[c] for c in "मकान"]
    assert processor.tokenizer.decode(ids) == vocab.decode(ids) == "कमला मकान"


def test_export_then_import_is_bit_identical(tmp_path):
    model_dir, ours, vocab = _seqattn_ctc_dir(tmp_path)
    assert cli_main(["convert", "hf-export", str(model_dir), str(tmp_path / "hf")]) == 0
    assert cli_main(["convert", "hf-import", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    back = load_model(tmp_path / "back")
    assert CharVocabulary.load(tmp_path / "back" / "tokens.json").tokens == vocab.tokens
    for key, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key
    pretraining = save_model(Wav2Vec2ForPretraining(tiny()).eval(), tmp_path / "pt")
    assert cli_main(["convert", "hf-export", str(pretraining), str(tmp_path / "hf_pt")]) == 0
    assert transformers.Wav2Vec2ForPreTraining.from_pretrained(tmp_path / "hf_pt") is not None
    assert cli_main(["convert", "hf-import", str(tmp_path / "hf_pt"), str(tmp_path / "pt_back")]) == 0
    original, again = load_model(pretraining).state_dict(), load_model(tmp_path / "pt_back").state_dict()
    assert set(original) == set(again) and all(torch.equal(original[k], again[k]) for k in original)


def test_export_of_local_attention_is_refused(tmp_path, capsys):
    local = AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=8, window_right=8))
    model_dir, _, _ = _seqattn_ctc_dir(tmp_path, attention=local)
    assert cli_main(["convert", "hf-export", str(model_dir), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "HF wav2vec2 only has full attention" in err and "4 non-full attention heads" in err
    assert not (tmp_path / "hf").exists()


@needs_fixtures
def test_converted_fairseq_models_run_through_analyze_and_localize(tmp_path, capsys):
    """The imported IndicWav2Vec-style checkpoints work with every analysis command and with localize."""
    pretrained, ctc = tmp_path / "pt", tmp_path / "ctc"
    assert cli_main(["convert", "fairseq", str(FIXTURES / "w2v2_base_like.pt"), str(pretrained)]) == 0
    assert cli_main(["convert", "fairseq", str(FIXTURES / "w2v2_ctc_base_like.pt"), str(ctc)]) == 0
    data = {lang: make_data_dir(tmp_path, lang, 4, lang, seed=i, texts=["HELLO THERE", "TEA"])
            for i, lang in enumerate(("hi", "ta"))}
    both = [str(d) for d in data.values()]
    assert cli_main(["analyze", "attention", str(pretrained), *both, "--out-dir", str(tmp_path / "att"),
                     "--quiet"]) == 0
    attention = json.loads((tmp_path / "att" / "attention.json").read_text())
    assert {h["kind"] for h in attention["heads"]} == {"full"} and attention["utterances"] == 8
    assert cli_main(["analyze", "codebook", str(pretrained), *both, "--out-dir", str(tmp_path / "cb"), "--quiet"]) == 0
    codebook = json.loads((tmp_path / "cb" / "codebook.json").read_text())
    assert codebook["languages"] == ["hi", "ta"] and codebook["groups"] == 2
    assert cli_main(["analyze", "layers", str(ctc), *both, "--out-dir", str(tmp_path / "ly"), "--folds", "2",
                     "--quiet"]) == 0
    assert json.loads((tmp_path / "ly" / "layers.json").read_text())["families"] == {"hi": "Indo-Aryan",
                                                                                     "ta": "Dravidian"}
    local = tmp_path / "ctc_local"
    assert cli_main(["convert", "localize", str(ctc), str(local), "--data", *both, "--test", str(data["hi"]),
                     "--bench-seconds", "2", "--bench-reps", "1", "--quiet"]) == 0
    report = json.loads((local / "localize.json").read_text())
    assert all(w["converted"] for w in report["windows"]) and "cer_change" in report["test"]
    model, source = load_model(local), load_model(ctc)
    assert model.config.layer_attention[0].local.heads == model.config.attention.num_heads
    same = {k: v for k, v in source.config.to_dict().items() if k not in ("attention", "layer_attention")}
    assert {k: model.config.to_dict()[k] for k in same} == same  # everything else carried over from fairseq
    assert cli_main(["transcribe", str(local), "--data-dir", str(data["ta"]), "--output-dir", str(tmp_path / "tr"),
                     "--quiet"]) == 0


def test_hf_directory_whose_config_disagrees_with_its_weights_is_refused(tmp_path, capsys):
    """An edited HF config.json: one line naming the HF key and the tensor, before the model is built."""
    _, directory = _hf_ctc_dir(tmp_path, "base")
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] = 48
    (directory / "config.json").write_text(json.dumps(config))
    assert cli_main(["convert", "hf-import", str(directory), str(tmp_path / "out")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "intermediate_size is 48 but the HF checkpoint holds " \
           "wav2vec2.encoder.layers.0.ffn.fc1.weight with shape (64, 32)" in errors[0], errors
    assert not (tmp_path / "out").exists()


def _same_weights(a_dir, b_dir):
    from safetensors.torch import load_file

    a, b = load_file(str(a_dir / "model.safetensors")), load_file(str(b_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_hf_import_by_repo_id_reads_the_offline_hub_cache(tmp_path):
    """huggingface_hub's own cache lookup (refs/main -> snapshots/<commit>) under HF_HUB_OFFLINE=1, as a user
    runs it; a repo missing from the cache is a one-line error naming the cache."""
    import os
    import subprocess
    import sys

    _, hf_dir = _hf_ctc_dir(tmp_path, "base")
    cache = tmp_path / "hub"
    repo = cache / "models--someorg--tiny-ctc"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots").mkdir()
    import shutil

    shutil.copytree(hf_dir, repo / "snapshots" / commit)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "seqattn.cli.main", "convert", "hf-import"]
    done = subprocess.run(command + ["someorg/tiny-ctc", str(tmp_path / "from_hub")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert cli_main(["convert", "hf-import", str(hf_dir), str(tmp_path / "from_dir")]) == 0
    _same_weights(tmp_path / "from_hub", tmp_path / "from_dir")
    assert "HF hub repo someorg/tiny-ctc" in (tmp_path / "from_hub" / "README.md").read_text()
    missing = subprocess.run(command + ["someorg/absent", str(tmp_path / "nothing")], env=env, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 2 and "not in the HF cache" in missing.stderr and "HF_HUB_OFFLINE" in missing.stderr
    assert not (tmp_path / "nothing").exists()


def test_sharded_safetensors_import_like_one_file(tmp_path):
    hf, hf_dir = _hf_ctc_dir(tmp_path, "large")
    sharded = tmp_path / "sharded"
    hf.save_pretrained(sharded, max_shard_size="40KB")
    for path in hf_dir.glob("*.json"):  # tokenizer and feature extractor files beside the weights
        if not (sharded / path.name).exists():
            (sharded / path.name).write_bytes(path.read_bytes())
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("*.safetensors"))) > 2
    assert cli_main(["convert", "hf-import", str(sharded), str(tmp_path / "a")]) == 0
    assert cli_main(["convert", "hf-import", str(hf_dir), str(tmp_path / "b")]) == 0
    _same_weights(tmp_path / "a", tmp_path / "b")
    next(p for p in sharded.glob("model-*.safetensors")).unlink()  # a shard the index names is gone
    assert cli_main(["convert", "hf-import", str(sharded), str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()


def test_per_language_vocabularies_and_mms_adapters(tmp_path, capsys):
    _, hf_dir = _hf_ctc_dir(tmp_path, "base")
    other = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "க": 5, "ா": 6, "ம": 7, "ல": 8}
    (hf_dir / "vocab.json").write_text(json.dumps({"hin": HF_VOCAB, "tam": other}, ensure_ascii=False),
                                       encoding="utf-8")
    assert cli_main(["convert", "hf-import", str(hf_dir), str(tmp_path / "x")]) == 2
    assert "one vocabulary per language (2, e.g. hin, tam); choose one with --language" in capsys.readouterr().err
    assert cli_main(["convert", "hf-import", str(hf_dir), str(tmp_path / "tam"), "--language", "tam"]) == 0
    assert CharVocabulary.load(tmp_path / "tam" / "tokens.json").tokens[3:7] == ["க", "ா", "ம", "ல"]
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "adapter_attn_dim": 16}))
    assert cli_main(["convert", "hf-import", str(hf_dir), str(tmp_path / "y"), "--language", "tam"]) == 2
    assert "MMS-style per-language attention adapters" in capsys.readouterr().err


def test_finetuning_continues_an_imported_ctc_model_with_its_own_head_and_vocabulary(tmp_path):
    from safetensors.torch import load_file

    from seqattn.train.config_io import load_config
    from seqattn.train.finetune import FinetuneConfig, train

    _, hf_dir = _hf_ctc_dir(tmp_path, "large")
    imported = tmp_path / "imported"
    assert cli_main(["convert", "hf-import", str(hf_dir), str(imported)]) == 0
    train_dir = make_data_dir(tmp_path, "train", 6, "hi", seconds=(1.0, 1.4), texts=["कमल", "मल काम", "कलम"])
    overrides = [f"init={imported}", f"data.train=[{{path: {train_dir}}}]", "optim.max_updates=2", "run.save_every=2",
                 "validate_every=0", "freeze_updates=0", "run.tensorboard=false", "data.max_tokens=48000",
                 "optim.lr=1e-6"]
    recipe = str(REPO / "recipes" / "wav2vec2" / "finetune_tiny.yaml")
    best = train(load_config(FinetuneConfig, recipe, [*overrides, f"run.output_dir={tmp_path / 'continued'}"]))
    assert (best / "tokens.json").read_text() == (imported / "tokens.json").read_text()
    log = (tmp_path / "continued" / "train.log").read_text(encoding="utf-8")
    assert "continuing the CTC head and vocabulary of" in log
    before, after = load_file(str(imported / "model.safetensors")), load_file(str(best / "model.safetensors"))
    assert (after["head.weight"] - before["head.weight"]).abs().max() < 1e-3  # the head trained on, not anew
    fresh = train(load_config(FinetuneConfig, recipe, [*overrides, "new_vocabulary=true",
                                                       f"run.output_dir={tmp_path / 'fresh'}"]))
    tokens = CharVocabulary.load(fresh / "tokens.json").tokens
    assert tokens != CharVocabulary.load(imported / "tokens.json").tokens and "<s>" not in tokens
