"""`seqattn analyze codebook` and `seqattn analyze layers`: checked against scipy/sklearn-independent paths."""
import json

import numpy as np
import pytest
import torch
from audio_fixtures import make_data_dir

from seqattn.analysis.codebook import code_counts, compare_languages, require_quantizer
from seqattn.analysis.inputs import AnalysisInputError, Utterance
from seqattn.analysis.layers import analyze_layers, pooled_layer_features
from seqattn.cli.main import main as cli_main
from seqattn.models.io import save_model
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPretraining, tiny


def table(used: dict[int, float], entries: int = 16, groups: int = 2) -> np.ndarray:
    out = np.zeros((groups, entries), dtype=np.int64)
    for entry, count in used.items():
        out[:, entry] = count
    return out


def test_divergences_match_scipy_and_overlaps_are_exact():
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(0)
    counts = {lang: rng.integers(0, 50, size=(2, 16)) for lang in ("hi", "ta", "te")}
    analysis = compare_languages(counts, top_k=4)
    for i, a in enumerate(analysis.languages):
        for j, b in enumerate(analysis.languages):
            pa = counts[a] / counts[a].sum(-1, keepdims=True)
            pb = counts[b] / counts[b].sum(-1, keepdims=True)
            expected = np.mean([jensenshannon(pa[g], pb[g], base=2) ** 2 for g in range(2)])
            assert analysis.jsd[i, j] == pytest.approx(expected, abs=1e-12)
    disjoint = compare_languages({"a": table({0: 5, 1: 5}), "b": table({2: 5, 3: 5})})
    assert disjoint.jsd[0, 1] == pytest.approx(1.0)  # no shared entry: one bit
    assert disjoint.jaccard[0, 1] == 0.0


def test_shared_and_language_specific_entries():
    counts = {"a": table({0: 10, 1: 10, 2: 10, 3: 10}), "b": table({2: 10, 3: 10, 4: 10, 5: 10}),
              "c": table({2: 10, 3: 10, 9: 10, 0: 0})}
    analysis = compare_languages(counts, top_k=4, min_share=0.05)
    assert analysis.shared == [(0, 2), (0, 3), (1, 2), (1, 3)]
    assert analysis.specific == {"a": [(0, 0), (0, 1), (1, 0), (1, 1)], "b": [(0, 4), (0, 5), (1, 4), (1, 5)],
                                 "c": [(0, 9), (1, 9)]}
    assert analysis.jaccard[0, 1] == pytest.approx(4 / 12)  # 2 of 6 entries per group in common
    assert analysis.linkage.shape == (2, 4)


@pytest.mark.parametrize("objective", ["contrastive", "bestrq"])
def test_code_counts_equal_the_models_own_quantize_per_utterance(objective):
    """Gumbel quantizer (2 groups of 32) and BEST-RQ's random-projection quantizer (2 codebooks of 32)."""
    config = tiny() if objective == "contrastive" else tiny(frontend="fbank", fbank_bins=40, objective="bestrq",
                                                             bestrq_codebooks=2, bestrq_entries=32)
    model = Wav2Vec2ForPretraining(config).eval()
    waves = [torch.randn(n) for n in (9000, 12000, 7000)]
    utterances = [Utterance(f"u{i}", w, lang) for i, (w, lang) in enumerate(zip(waves, ("hi", "ta", "hi")))]
    counts = code_counts(model, utterances, batch_size=3, progress=False)
    expected = {"hi": np.zeros((2, 32), dtype=np.int64), "ta": np.zeros((2, 32), dtype=np.int64)}
    with torch.no_grad():
        for u in utterances:
            targets = model.quantize(u.wave[None])[0].targets[0]  # (T, G), the pretraining targets path
            for g in range(2):
                expected[u.language][g] += np.bincount(targets[:, g].numpy(), minlength=32)
    assert set(counts) == {"hi", "ta"}
    for lang in counts:
        np.testing.assert_array_equal(counts[lang], expected[lang])


def test_codebook_needs_a_quantizer_and_languages(tmp_path, capsys):
    with pytest.raises(AnalysisInputError, match="quantizer"):
        require_quantizer(Wav2Vec2ForCTC(tiny(vocab_size=8)), "exp/ft")
    pretrain_dir = save_model(Wav2Vec2ForPretraining(tiny()), tmp_path / "pt")
    ctc_dir = save_model(Wav2Vec2ForCTC(tiny(vocab_size=8)), tmp_path / "ctc")
    hi = make_data_dir(tmp_path, "hi", 3, "hi")
    (tmp_path / "plain").mkdir()
    for wav in (tmp_path / "wav" / "hi").iterdir():
        (tmp_path / "plain" / wav.name).symlink_to(wav)
    out = str(tmp_path / "o")
    assert cli_main(["analyze", "codebook", str(ctc_dir), str(hi), "--out-dir", out]) == 2
    assert "needs a pretrained wav2vec2 model with its quantizer" in capsys.readouterr().err
    assert cli_main(["analyze", "codebook", str(pretrain_dir), str(tmp_path / "plain"), "--out-dir", out]) == 2
    assert "needs the language of every utterance" in capsys.readouterr().err
    assert cli_main(["analyze", "codebook", str(pretrain_dir), str(hi), "--out-dir", out]) == 2
    assert "at least 2 languages" in capsys.readouterr().err


def test_codebook_cli_with_utt2lang_and_lang_equals_path(tmp_path):
    pretrain_dir = save_model(Wav2Vec2ForPretraining(tiny()), tmp_path / "pt")
    hi = make_data_dir(tmp_path, "hi", 3, "hi", seed=1)
    ta = make_data_dir(tmp_path, "ta", 3, "ta", seed=2)
    out = tmp_path / "o"
    code = cli_main(["analyze", "codebook", str(pretrain_dir), str(hi), str(ta), f"te={tmp_path / 'wav' / 'hi'}",
                     "--out-dir", str(out), "--quiet", "--plot-format", "svg"])
    assert code == 0
    values = json.loads((out / "codebook.json").read_text())
    assert values["languages"] == ["hi", "ta", "te"]
    assert values["per_language"]["te"]["counts"] == values["per_language"]["hi"]["counts"]  # the same audio
    assert values["jensen_shannon_bits"][0][2] == pytest.approx(0.0, abs=1e-12)
    assert all(values["per_language"][lang]["utterances"] == 3 for lang in values["languages"])
    for name in ("codebook_jsd", "codebook_jaccard", "codebook_dendrogram"):
        assert (out / f"{name}.svg").is_file()
    assert (out / "codebook_languages.csv").read_text().count("\n") == 4


def test_pooled_features_equal_frame_means_of_each_layer():
    model = Wav2Vec2ForCTC(tiny(vocab_size=8)).eval()
    waves = [torch.randn(9000), torch.randn(13000)]
    pooled = pooled_layer_features(model, [Utterance(str(i), w, "hi") for i, w in enumerate(waves)], batch_size=2,
                                   progress=False)
    assert pooled.shape == (2, 3, 96)
    with torch.no_grad():
        for i, wave in enumerate(waves):
            layers, _ = model.extract_features(wave[None])
            for layer, out in enumerate(layers, start=1):
                np.testing.assert_allclose(pooled[i, layer], out[0].mean(0).double().numpy(), atol=1e-5)
            features = model.wav2vec2.features(wave[None])
            projected = model.wav2vec2.feature_projection(features.x)[0].mean(0)
            np.testing.assert_allclose(pooled[i, 0], projected.double().numpy(), atol=1e-5)


def test_probes_find_the_layer_that_encodes_language_and_family():
    rng = np.random.default_rng(0)
    languages = ["hi", "mr", "ta"] * 10
    onehot = np.eye(3)[[("hi", "mr", "ta").index(lang) for lang in languages]]
    noise = rng.standard_normal((30, 3, 12))
    features = noise.copy()
    features[:, 1, :3] += 8 * onehot  # layer 1 separates the languages; layers 0 and 2 are noise
    result = analyze_layers(features, languages, folds=5)
    accuracy = [m for m, _ in result.language_accuracy]
    assert accuracy[1] == 1.0 and accuracy[0] < 0.8 and accuracy[2] < 0.8
    assert result.best_layer == 1
    assert [m for m, _ in result.family_accuracy][1] == 1.0  # hi, mr Indo-Aryan; ta Dravidian
    assert result.chance == {"language": pytest.approx(1 / 3), "family": pytest.approx(2 / 3)}
    assert result.projection.shape == (30, 2)


def test_probe_errors_name_what_is_missing():
    features = np.zeros((6, 2, 4))
    with pytest.raises(AnalysisInputError, match="hi has 3, ta has 3"):
        analyze_layers(features, ["hi", "ta"] * 3, folds=5)
    with pytest.raises(AnalysisInputError, match="at least 2 classes"):
        analyze_layers(features, ["hi"] * 6, folds=2)


def test_layers_cli_writes_probe_table_and_plots(tmp_path):
    model_dir = save_model(Wav2Vec2ForCTC(tiny(vocab_size=8)), tmp_path / "m")
    dirs = [str(make_data_dir(tmp_path, lang, 4, lang, seed=i)) for i, lang in enumerate(("hi", "bn", "ta", "kn"))]
    out = tmp_path / "o"
    assert cli_main(["analyze", "layers", str(model_dir), *dirs, "--out-dir", str(out), "--folds", "2", "--quiet"]) == 0
    values = json.loads((out / "layers.json").read_text())
    assert len(values["layers"]) == 3 and values["utterances"] == 16
    assert values["families"] == {"bn": "Indo-Aryan", "hi": "Indo-Aryan", "kn": "Dravidian", "ta": "Dravidian"}
    assert all(0 <= row["language_accuracy"] <= 1 and "family_accuracy" in row for row in values["layers"])
    assert (out / "layer_probes.png").is_file() and (out / "layer_projection.png").is_file()
