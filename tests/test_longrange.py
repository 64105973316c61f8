"""Tasks where distance matters: associative recall batches, copy-source classes, the standard-library corpus."""
import json

import numpy as np
import pytest

from seqattn.data.code_corpus import SPLITS, CorpusBuildError, build_code_corpus
from seqattn.data.longrange import BEYOND, IGNORE, NOVEL, WITHIN, RecallConfig, copy_source_classes, recall_batch


def test_recall_batches_ask_for_the_value_after_the_first_occurrence_of_each_key():
    config = RecallConfig(length=2048, pairs=24, queries=16, num_keys=64, num_values=8, num_filler=16,
                          query_tokens=128, min_distance=600)
    batch = recall_batch(config, 3, seed=4)
    tokens, targets, distance = batch.tokens.numpy(), batch.targets.numpy(), batch.distance.numpy()
    for row in range(3):
        asked = np.nonzero(targets[row] != IGNORE)[0]
        assert len(asked) == 16 and asked.min() >= 2048 - 128
        keys = tokens[row][tokens[row] < 64]
        assert len(keys) == 24 + 16  # every pair's key once, every query's key once more
        for t in asked:
            key = tokens[row, t]
            first = np.nonzero(tokens[row, :t] == key)[0]
            assert len(first) == 1  # the key stood exactly once before its query
            source = first[0]
            assert tokens[row, t + 1] == targets[row, t] == tokens[row, source + 1]  # teacher-forced value
            assert 64 <= targets[row, t] < 72
            assert distance[row, t] == t - source >= 600
    again = recall_batch(config, 3, seed=4)
    assert (again.tokens == batch.tokens).all() and not (recall_batch(config, 3, seed=5).tokens == batch.tokens).all()


def test_recall_config_errors_name_the_values():
    with pytest.raises(ValueError, match="leaves"):
        RecallConfig(length=1024, pairs=100, num_keys=128, min_distance=700).validate()
    with pytest.raises(ValueError, match="queries"):
        RecallConfig(pairs=4, queries=8).validate()


def test_copy_source_classes_by_distance_of_the_most_recent_occurrence():
    rng = np.random.default_rng(0)
    text = rng.integers(0, 250, size=3000)
    text[1000:1020] = text[100:120]  # a copy 900 back
    text[2000:2020] = text[1950:1970]  # a copy 50 back
    classes = copy_source_classes(text, window=256, ngram=8)
    assert (classes[1007:1020] == BEYOND).all()  # n-grams ending inside the copy, after its first 8 bytes
    assert (classes[2007:2020] == WITHIN).all()
    assert (classes[1000:1007] == NOVEL).all()  # the n-gram still reaches back before the copy
    random_part = np.r_[0:1000, 1030:1950]
    assert (classes[random_part] == NOVEL).mean() > 0.99
    # a phrase seen far back and then again nearby: the most recent occurrence decides
    text[2500:2520] = text[100:120]
    assert (copy_source_classes(text, window=256, ngram=8)[2507:2520] == BEYOND).all()
    text[2700:2720] = text[100:120]
    assert (copy_source_classes(text, window=256, ngram=8)[2707:2720] == WITHIN).all()


def test_code_corpus_is_built_from_the_standard_library(tmp_path):
    manifest = build_code_corpus(tmp_path)
    for split, names in SPLITS.items():
        text = (tmp_path / f"{split}.txt").read_text(encoding="utf-8")
        assert len(text) == manifest["splits"][split]["characters"]
        assert [f["file"] for f in manifest["splits"][split]["files"]] == names
        assert all(len(f["sha256"]) == 64 for f in manifest["splits"][split]["files"])
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert manifest["splits"]["train"]["characters"] > 2_000_000
    valid = np.frombuffer((tmp_path / "valid.txt").read_bytes()[:16384], np.uint8)
    classes = copy_source_classes(valid, window=256)
    assert (classes == BEYOND).mean() > 0.1  # the text has repeats beyond the window: the point of it


def test_code_corpus_names_missing_modules(tmp_path):
    with pytest.raises(CorpusBuildError, match="argparse.py"):
        build_code_corpus(tmp_path / "out", stdlib=tmp_path)
