"""Routing Transformer LMs: strict causality end to end, cached generation = uncached, tokenizers,
training/resume, and eval-lm perplexity against plain forward passes."""
import json
import math

import numpy as np
import pytest
import torch

from seqattn import load_model
from seqattn.cli.main import main as cli_main
from seqattn.data.lm_tokenizers import (
    ByteTokenizer,
    TokenizerConfig,
    load_tokenizer,
    tokenizer_from_dict,
    tokenizer_to_json,
    train_tokenizer,
)
from seqattn.evaluate.perplexity import evaluate_files
from seqattn.models.io import save_model
from seqattn.models.lm import TransformerLM, generate, presets

CONFIGS = {
    "local+routing": presets.tiny(),
    "shared-qk routing": presets.with_attention(presets.tiny(), routing=dict(shared_qk=True)),
    "routing in the last layer only": presets.tiny(routing_layers=1),
    "local+full": presets.with_attention(presets.tiny(), local=dict(heads=2), routing=dict(heads=0)),
    "per-head windows": presets.with_attention(presets.tiny(), local=dict(windows=[[4, 0], [1, 0]])),
    "dilated heads": presets.with_attention(
        presets.tiny(), routing=dict(heads=1), dilated=dict(heads=1, dilation=3, window=3)
    ),
    "global heads": presets.with_attention(
        presets.tiny(), routing=dict(heads=1), global_tokens=dict(heads=1, tokens=2, window=3, block=5)
    ),
    "global mean heads": presets.with_attention(
        presets.tiny(), routing=dict(heads=0), global_tokens=dict(heads=2, tokens=1, pooling="mean", window=2, block=4)
    ),
    "learned positions": presets.tiny(positions="learned"),
}


def trained_centroids(model: TransformerLM) -> TransformerLM:
    """Move the k-means centroids away from their random start (train mode), then freeze (eval)."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randint(0, model.config.vocab_size, (2, 48)))
    return model.eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_at_t_ignore_every_later_token(name):
    model = trained_centroids(TransformerLM(CONFIGS[name]))
    tokens = torch.randint(0, 50, (2, 41))
    base = model(tokens).logits
    for t in (0, 7, 20, 39):
        changed = tokens.clone()
        changed[:, t + 1 :] = torch.randint(0, 50, changed[:, t + 1 :].shape)
        out = model(changed).logits
        assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5), t
    # and a change at t does move later logits (the test can fail)
    changed = tokens.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 50
    assert not torch.allclose(model(changed).logits[:, 5:], base[:, 5:], atol=1e-4)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_generation_equals_uncached(name):
    model = trained_centroids(TransformerLM(CONFIGS[name]))
    prompt = torch.randint(0, 50, (3, 9))
    cached = generate(model, prompt, 40, temperature=0)
    plain = generate(model, prompt, 40, temperature=0, use_cache=False)
    assert torch.equal(cached, plain)
    sampled = generate(model, prompt, 40, temperature=1.0, top_k=10, seed=3)
    assert torch.equal(sampled, generate(model, prompt, 40, temperature=1.0, top_k=10, seed=3, use_cache=False))
    # step logits equal the full pass at every position
    caches = model.new_caches()
    full = model(cached).logits
    model(cached[:, :9], caches=caches)
    for t in range(9, cached.shape[1] - 1):
        assert torch.allclose(model.step(cached[:, t], caches), full[:, t], atol=1e-5)


def test_cache_memory_is_bounded_by_the_windows():
    config = presets.with_attention(
        presets.tiny(),
        local=dict(heads=1, window_left=4),
        routing=dict(heads=2, window=4, clusters=3),
        global_tokens=dict(heads=1, window=4, block=8),
    )
    model = trained_centroids(TransformerLM(config))
    caches = model.new_caches()
    model(torch.randint(0, 50, (1, 5)), caches=caches)
    sizes = []
    for t in range(300):
        model.step(torch.randint(0, 50, (1,)), caches)
        if t in (50, 299):
            sizes.append(sum(c.memory_bytes() for c in caches))
    assert sizes[0] == sizes[1]  # 50 or 300 tokens later: the same memory


@pytest.mark.parametrize("first_stop", [0, 5, 16, 17, 39])
def test_generation_ends_at_the_first_step_every_row_drew_the_stop_token(first_stop):
    """The host checks for the stop token only every few tokens; the result still ends exactly at the first
    step where every row drew it (here the rows draw it there together, by construction of the stop token)."""
    torch.manual_seed(0)
    model = TransformerLM(presets.tiny()).eval()
    prompt = torch.randint(0, 50, (1, 4))
    full = generate(model, prompt, 40, temperature=0)  # greedy: the same tokens whatever the stop rule
    stop = int(full[0, 4 + first_stop])
    first = int((full[0, 4:] == stop).nonzero()[0])  # the stop token may already have come earlier
    stopped = generate(model, prompt, 40, temperature=0, stop_token=stop)
    assert torch.equal(stopped, full[:, : 4 + first + 1])
    two = torch.cat([prompt, prompt])  # both rows draw the same tokens, so they stop at the same step
    assert torch.equal(generate(model, two, 40, temperature=0, stop_token=stop), torch.cat([stopped, stopped]))
    assert torch.equal(generate(model, prompt, 40, temperature=0, stop_token=50 + 1), full)  # never drawn


def test_generate_refuses_train_mode_and_empty_prompts():
    model = TransformerLM(presets.tiny())
    with pytest.raises(ValueError, match="eval"):
        generate(model, torch.zeros(1, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="length >= 1"):
        generate(model.eval(), torch.zeros(1, 0, dtype=torch.long), 2)


@pytest.mark.parametrize("kind", ["byte", "char", "word", "sentencepiece"])
def test_tokenizers_round_trip_and_save(tmp_path, kind):
    text = "".join(f"line {i} of the corpus, with words and words again.\nसमुद्र {i % 7}\n" for i in range(300))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    tokenizer = train_tokenizer(TokenizerConfig(type=kind, vocab_size=60), [corpus])
    again = tokenizer_from_dict(json.loads(tokenizer_to_json(tokenizer)))
    sample = "line 3 of the corpus, with words and words again.\nसमुद्र 2\n"
    ids = again.encode(sample)
    assert ids == tokenizer.encode(sample) and all(0 <= i < again.vocab_size for i in ids)
    assert again.bos_id not in ids
    assert again.decode(ids) == sample


def test_missing_tokenizer_is_a_clear_error(tmp_path, capsys):
    model_dir = save_model(TransformerLM(presets.tiny()), tmp_path / "lm")
    (tmp_path / "t.txt").write_text("abc\n")
    assert cli_main(["eval-lm", str(model_dir), str(tmp_path / "t.txt")]) == 2
    assert "tokenizer.json" in capsys.readouterr().err


def byte_lm(tmp_path, **attention):
    config = presets.with_attention(presets.tiny(vocab_size=257), **attention)
    model = trained_centroids(TransformerLM(config))
    model_dir = save_model(model, tmp_path / "lm", extra_files={"tokenizer.json": tokenizer_to_json(ByteTokenizer())})
    return load_model(model_dir), model_dir


def reference_nll(model, ids: list[int], starts_and_first: list[tuple[int, int, int]]) -> float:
    """Sum of -log p over explicitly listed windows: (input start, input stop, first scored target index)."""
    total = 0.0
    with torch.no_grad():
        for start, stop, first in starts_and_first:
            window = torch.tensor(ids[start : stop + 1])[None]
            logp = torch.log_softmax(model(window[:, :-1]).logits[0].double(), -1)
            targets = window[0, 1:]
            total += -float(logp[torch.arange(first, targets.shape[0]), targets[first:]].sum())
    return total


def test_eval_lm_blocks_and_sliding_equal_plain_forward_passes(tmp_path):
    model, model_dir = byte_lm(tmp_path)
    text = "".join(f"the {i}th line, नमस्ते.\n" for i in range(9))
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    ids = [256] + list(text.encode("utf-8"))  # <bos> + bytes
    n = len(ids) - 1  # targets
    # blocks of 32: every window scores all its targets
    (score,), _ = evaluate_files(model, ByteTokenizer(), [str(path)], context=32, batch_size=3, progress=False)
    expected = reference_nll(model, ids, [(s, min(s + 32, n), 0) for s in range(0, n, 32)])
    assert score.tokens == n and score.bytes == len(text.encode()) and score.words == len(text.split())
    assert score.nll == pytest.approx(expected, rel=1e-5)
    # sliding window 32 / stride 8: window b scores the targets after position b + 24 (all, in the first)
    (score,), _ = evaluate_files(model, ByteTokenizer(), [str(path)], context=32, stride=8, progress=False)
    windows, next_target, b = [], 1, 0
    while True:
        stop = min(b + 32, n)
        windows.append((b, stop, next_target - b - 1))
        next_target = stop + 1
        if stop == n:
            break
        b += 8
    assert score.tokens == n
    assert score.nll == pytest.approx(reference_nll(model, ids, windows), rel=1e-5)


def test_eval_lm_splits_the_loss_by_copy_source(tmp_path, capsys):
    """--copy-window: the per-class losses are the plain per-target NLLs of each window, grouped by the class of
    the n-gram ending at the target within that window; the classes add up to the whole."""
    from seqattn.data.longrange import CLASS_NAMES, copy_source_classes

    model, model_dir = byte_lm(tmp_path)
    rng = np.random.default_rng(1)
    phrase = bytes(rng.integers(97, 123, size=30)).decode()
    filler = lambda k: bytes(rng.integers(97, 123, size=k)).decode()
    text = phrase + filler(60) + phrase + filler(5) + phrase[:20] + "\n"  # copies 90 back and 35 back
    path = tmp_path / "text.txt"
    path.write_text(text)
    ids = np.array([256] + list(text.encode()))
    (score,), overall = evaluate_files(model, ByteTokenizer(), [str(path)], context=160, progress=False, copy_window=40)
    expected = {name: [0, 0.0] for name in CLASS_NAMES}
    with torch.no_grad():
        for start in range(0, len(ids) - 1, 160):
            window = ids[start : start + 161]
            logp = torch.log_softmax(model(torch.tensor(window[:-1])[None]).logits[0].double(), -1)
            nll = -logp[torch.arange(len(window) - 1), torch.tensor(window[1:])].numpy()
            for value, name in enumerate(CLASS_NAMES):
                chosen = copy_source_classes(window, 40)[1:] == value
                expected[name][0] += int(chosen.sum())
                expected[name][1] += float(nll[chosen].sum())
    assert expected["within"][0] > 0 and expected["beyond"][0] > 0  # the text has both kinds of copies
    for name in CLASS_NAMES:
        assert score.copy_source[name][0] == expected[name][0]
        assert score.copy_source[name][1] == pytest.approx(expected[name][1], rel=1e-5)
    assert sum(tokens for tokens, _ in score.copy_source.values()) == score.tokens
    assert overall.copy_source == score.copy_source
    capsys.readouterr()
    assert cli_main(["eval-lm", str(model_dir), str(path), "--context", "160", "--copy-window", "40", "--quiet"]) == 0
    assert "copy source beyond (window 40)" in capsys.readouterr().out


def test_sliding_window_with_enough_context_equals_one_pass_over_everything(tmp_path):
    """All heads local (window 4) in 2 layers: a token depends on at most 8 earlier tokens, so with
    context - stride >= 8 the sliding-window score must equal one plain forward pass over the whole text."""
    model, _ = byte_lm(tmp_path, local=dict(heads=4), routing=dict(heads=0))
    text = "abcdefghij klmnop\n" * 12
    path = tmp_path / "t.txt"
    path.write_text(text)
    ids = [256] + list(text.encode())
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor(ids[:-1])[None]).logits[0].double(), -1)
    one_pass = -float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
    (score,), _ = evaluate_files(model, ByteTokenizer(), [str(path)], context=24, stride=12, progress=False)
    assert score.nll == pytest.approx(one_pass, rel=1e-5)


def test_eval_lm_cli_json_and_bad_files(tmp_path, capsys):
    _, model_dir = byte_lm(tmp_path)
    good, empty, bad = tmp_path / "good.txt", tmp_path / "empty.txt", tmp_path / "bad.txt"
    good.write_text("hello world\nbye\n")
    empty.write_text("")
    bad.write_bytes(b"fine text\nthen \xff\xfe garbage\n")
    binary = tmp_path / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    report_path = tmp_path / "report.json"
    code = cli_main(
        [
            "eval-lm",
            str(model_dir),
            str(good),
            str(empty),
            str(bad),
            str(binary),
            "--context",
            "16",
            "--stride",
            "8",
            "--json",
            str(report_path),
            "--quiet",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "bad.txt: invalid UTF-8 at byte 15" in err and "empty: no text to score" in err
    report = json.loads(report_path.read_text())
    files = {f["name"].rsplit("/", 1)[-1]: f for f in report["files"]}
    assert files["good.txt"]["tokens"] == 16 and files["good.txt"]["words"] == 3 and files["good.txt"]["bytes"] == 16
    assert files["good.txt"]["bits_per_byte"] == pytest.approx(files["good.txt"]["nll"] / math.log(2) / 16)
    assert files["empty.txt"]["tokens"] == 0 and files["empty.txt"]["token_ppl"] is None
    assert files["binary.bin"]["error"].startswith(str(binary)) and "byte 128" in files["binary.bin"]["error"]
    assert report["overall"]["tokens"] == 16 and report["scheme"] == "sliding"
    code = cli_main(["eval-lm", str(model_dir), str(bad), "--context", "16", "--errors", "replace", "--quiet"])
    assert code == 0


def test_train_lm_resumes_exactly_and_the_model_generates(tmp_path, capsys):
    from seqattn.train.config_io import load_config
    from seqattn.train.lm import LMTrainConfig, train

    text = "".join(f"To be or not to be, that is question {i % 13}.\n" for i in range(400))
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "valid.txt").write_text(text[:2000])
    common = [
        f"data.train=[{tmp_path / 'train.txt'}]",
        f"data.valid=[{tmp_path / 'valid.txt'}]",
        "model.dim=32",
        "model.num_layers=2",
        "model.attention.num_heads=4",
        "model.attention.local.heads=2",
        "model.attention.routing.heads=2",
        "model.attention.local.window_left=8",
        "model.attention.routing.window=8",
        "model.attention.routing.clusters=2",
        "model.max_context=32",
        "data.seq_len=32",
        "data.batch_size=4",
        "optim.max_updates=8",
        "optim.warmup_updates=2",
        "run.log_every=2",
        "run.save_every=2",
        "validate_every=4",
        "run.tensorboard=false",
        "data.valid_tokens=256",
    ]
    recipe = "recipes/lm/tinyshakespeare_char.yaml"
    whole = train(load_config(LMTrainConfig, recipe, common + [f"run.output_dir={tmp_path / 'a'}"]))
    first = load_config(LMTrainConfig, recipe, common + [f"run.output_dir={tmp_path / 'b'}", "run.stop_after=3"])
    train(first)
    train(load_config(LMTrainConfig, recipe, common + [f"run.output_dir={tmp_path / 'b'}"]))
    a = load_model(tmp_path / "a" / "checkpoints" / "update_00000008")
    b = load_model(tmp_path / "b" / "checkpoints" / "update_00000008")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name
    assert load_tokenizer(whole).vocab_size == a.config.vocab_size
    assert '"prefix": "valid"' in (tmp_path / "a" / "train.log").read_text()
    capsys.readouterr()
    assert cli_main(["generate", str(whole), "To be", "--max-new-tokens", "20", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("To be") and len(out) > 20
    assert cli_main(["eval-lm", str(whole), str(tmp_path / "valid.txt"), "--context", "32", "--quiet"]) == 0


def test_a_time_schedule_anneals_by_training_time_stops_when_spent_and_resumes(tmp_path, monkeypatch):
    """``optim.schedule_time_s``: with a clock that moves 1 s per update, 10 s of schedule over 1000 updates run
    the schedule at 100 updates per second: the logged rate is the schedule's at 100 x the update, training
    ends at update 10 with the end rate, and a run interrupted at update 4 resumes to the same weights."""
    import itertools

    from seqattn.train import loop
    from seqattn.train.config_io import load_config
    from seqattn.train.lm import LMTrainConfig, schedule_for, train

    text = "".join(f"To be or not to be, that is question {i % 13}.\n" for i in range(200))
    (tmp_path / "train.txt").write_text(text)
    common = [
        f"data.train=[{tmp_path / 'train.txt'}]",
        "model.dim=16",
        "model.num_layers=1",
        "model.attention.num_heads=2",
        "model.attention.local.heads=2",
        "model.attention.local.window_left=8",
        "model.max_context=16",
        "data.seq_len=16",
        "data.batch_size=2",
        "optim.max_updates=1000",
        "optim.warmup_updates=50",
        "optim.schedule_time_s=10",
        "run.log_every=1",
        "run.save_every=2",
        "validate_every=0",
        "run.tensorboard=false",
    ]
    recipe = "recipes/lm/tinyshakespeare_char.yaml"
    monkeypatch.setattr(loop, "_clock", itertools.count().__next__)  # 1 s per call: one call per update
    config = load_config(LMTrainConfig, recipe, common + [f"run.output_dir={tmp_path / 'a'}"])
    train(config)
    checkpoints = sorted(p.name for p in (tmp_path / "a" / "checkpoints").glob("update_*"))
    assert checkpoints[-1] == "update_00000010", checkpoints  # time spent: 10 of the 1000 updates
    log = [
        json.loads(line)
        for line in (tmp_path / "a" / "train.log").read_text().splitlines()
        if line.startswith("{") and '"lr"' in line
    ]
    schedule = schedule_for(config)
    rates = {entry["update"]: entry["lr"] for entry in log}
    assert sorted(rates) == list(range(1, 11))
    for step, rate in rates.items():  # the rate set for the next update, 100 updates of schedule per second
        assert rate == pytest.approx(config.optim.lr * schedule(min(100 * step, 1000)), rel=1e-6), step
    assert rates[10] == pytest.approx(config.optim.lr * config.optim.end_lr_ratio, rel=1e-6)

    train(load_config(LMTrainConfig, recipe, common + [f"run.output_dir={tmp_path / 'b'}", "run.stop_after=4"]))
    train(load_config(LMTrainConfig, recipe, common + [f"run.output_dir={tmp_path / 'b'}"]))
    a = load_model(tmp_path / "a" / "checkpoints" / "update_00000010")
    b = load_model(tmp_path / "b" / "checkpoints" / "update_00000010")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name
    assert not (tmp_path / "b" / "checkpoints" / "update_00000011").exists()


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    """k-means statistics are all-reduced and DDP averages equal per-rank shares, so 2 ranks == 1 process (a
    layer of local, routed, dilated, global and block-routed heads: every parameter, the summary queries
    included)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    repo = Path(__file__).resolve().parents[1]
    text = "".join(f"the quick brown fox {i % 17} jumps over the lazy dog.\n" for i in range(300))
    (tmp_path / "train.txt").write_text(text)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    weights = {}
    for procs in (1, 2):
        out = tmp_path / f"procs{procs}"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(procs),
            "--master_port",
            str(29700 + procs + os.getpid() % 1000),
            "-m",
            "seqattn.cli.main",
            "train-lm",
            str(repo / "recipes" / "lm" / "tinyshakespeare_char.yaml"),
            f"data.train=[{tmp_path / 'train.txt'}]",
            f"run.output_dir={out}",
            "model.dim=40",
            "model.num_layers=2",
            "model.attention.num_heads=5",
            "model.attention.local.heads=1",
            "model.attention.block_routed.heads=1",
            "model.attention.block_routed.block=8",
            "model.attention.block_routed.top_k=1",
            "model.attention.routing.heads=1",
            "model.attention.dilated.heads=1",
            "model.attention.global_tokens.heads=1",
            "model.attention.dilated.dilation=2",
            "model.attention.dilated.window=4",
            "model.attention.global_tokens.tokens=2",
            "model.attention.global_tokens.window=4",
            "model.attention.global_tokens.block=8",
            "model.routing_layers=-1",
            "model.attention.local.window_left=8",
            "model.attention.routing.window=8",
            "model.attention.routing.clusters=2",
            "model.max_context=32",
            "data.seq_len=32",
            "data.batch_size=4",
            "optim.max_updates=3",
            "optim.warmup_updates=1",
            "run.save_every=3",
            "run.tensorboard=false",
            "run.threads=1",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        weights[procs] = load_file(str(out / "checkpoints" / "update_00000003" / "model.safetensors"))
    for key in weights[1]:
        torch.testing.assert_close(
            weights[2][key], weights[1][key], atol=1e-4, rtol=1e-3, msg=lambda m, key=key: f"{key}: {m}"
        )
    assert any("kmeans" in key for key in weights[1])
    assert any("global_attention.queries" in key for key in weights[1])


def test_a_corpus_smaller_than_one_batch_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("a few lines of text\n" * 15)  # 4 sequences of 64, a batch is 12
    code = cli_main(
        [
            "train-lm",
            "recipes/lm/tinyshakespeare_char.yaml",
            f"data.train=[{tmp_path / 't.txt'}]",
            f"run.output_dir={tmp_path / 'o'}",
            "run.tensorboard=false",
        ]
    )
    assert code == 2 and "fewer than one batch of 12" in capsys.readouterr().err


def test_bf16_autocast_with_gradient_accumulation_trains(tmp_path):
    from seqattn.train.config_io import load_config
    from seqattn.train.lm import LMTrainConfig, train

    (tmp_path / "t.txt").write_text("a small corpus, repeated for the language model.\n" * 100)
    config = load_config(
        LMTrainConfig,
        "recipes/lm/tinyshakespeare_char.yaml",
        [
            f"data.train=[{tmp_path / 't.txt'}]",
            f"run.output_dir={tmp_path / 'o'}",
            "model.dim=32",
            "model.num_layers=1",
            "model.attention.local.heads=2",
            "model.attention.routing.heads=2",
            "model.routing_layers=-1",
            "model.attention.local.window_left=8",
            "model.attention.routing.window=8",
            "model.attention.routing.clusters=2",
            "model.max_context=32",
            "data.seq_len=32",
            "data.batch_size=4",
            "optim.max_updates=3",
            "optim.update_freq=2",
            "run.precision=bf16",
            "run.save_every=3",
            "run.tensorboard=false",
        ],
    )
    best = train(config)
    trace = [json.loads(line) for line in (tmp_path / "o" / "updates.jsonl").read_text().splitlines()]
    assert [row["batches"] for row in trace] == [[0, 1], [2, 3], [4, 5]]  # two micro-batches per update
    assert all(torch.isfinite(v).all() for v in load_model(best).state_dict().values())


def test_attention_settings_live_under_attention_and_old_model_dirs_still_load(tmp_path, capsys):
    """One way to say a setting: a flat attention key in a training config is refused with the key it moved
    to; a model saved with the flat keys (before attention was nested) loads with the same weights."""
    from pathlib import Path

    from seqattn.models.lm.config import LMConfig

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "lm" / "tinyshakespeare_char.yaml"

    with pytest.raises(
        ValueError, match=r"shared_qk -> attention.routing.shared_qk, window -> attention.local.window_left"
    ):
        LMConfig.from_dict({"window": 8, "shared_qk": True})
    assert cli_main(["train-lm", str(recipe), "model.window=8", "--print-config"]) == 2
    assert "window -> attention.local.window_left" in capsys.readouterr().err
    config = presets.with_attention(
        presets.tiny(vocab_size=257), local=dict(window_left=3), routing=dict(shared_qk=True)
    )
    original = TransformerLM(config)
    model_dir = save_model(original, tmp_path / "lm")
    meta = json.loads((model_dir / "config.json").read_text())
    attention = meta["config"].pop("attention")
    local, routing = attention["local"], attention["routing"]
    meta["config"].update(
        num_heads=attention["num_heads"],
        local_heads=local["heads"],
        routing_heads=routing["heads"],
        window=local["window_left"],
        num_clusters=routing["clusters"],
        routing_window=routing["window"],
        shared_qk=routing["shared_qk"],
    )
    (model_dir / "config.json").write_text(json.dumps(meta))
    loaded = load_model(model_dir)
    assert loaded.config.attention == config.attention
    for name, tensor in original.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
