"""BEST-RQ pretraining: the random-projection quantizer against a direct computation, frozen and saved targets,
the cross-entropy objective, the config checks, and the pretraining command (checkpoints, resume, torchrun)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from audio_fixtures import make_data_dir
from safetensors.torch import load_file

from seqattn import load_model
from seqattn.models.io import save_model
from seqattn.models.wav2vec2 import Wav2Vec2ForPretraining, tiny
from seqattn.models.wav2vec2.bestrq import RandomProjectionQuantizer
from seqattn.nn import AttentionConfig
from seqattn.nn.heads import LocalHeads
from seqattn.train.config_io import load_config
from seqattn.train.pretrain import PretrainConfig, train

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "wav2vec2" / "pretrain_bestrq_conformer_cpu.yaml"
LOCAL = AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=8, window_right=8))


def _config(**overrides):
    values = dict(frontend="fbank", fbank_bins=40, objective="bestrq", bestrq_codebooks=2, bestrq_entries=64,
                  attention=LOCAL, mask_prob=0.4, mask_length=2)
    return tiny(**{**values, **overrides})


def test_targets_are_the_nearest_codebook_entry_of_the_projection():
    quantizer = RandomProjectionQuantizer(dim=12, codebooks=3, entries=50, code_dim=5, seed=7)
    x = torch.randn(2, 9, 12)
    targets = quantizer(x).targets  # (B, T, G)
    for g in range(3):
        projected = F.normalize(x @ quantizer.projection[g], dim=-1)  # (B, T, 5)
        distances = torch.cdist(projected, quantizer.codes[g][None].expand(2, -1, -1))  # (B, T, 50)
        assert torch.equal(targets[..., g], distances.argmin(-1))  # nearest unit vector = largest cosine
    assert torch.allclose(quantizer.codes.norm(dim=-1), torch.ones(3, 50))
    again = RandomProjectionQuantizer(dim=12, codebooks=3, entries=50, code_dim=5, seed=7)
    assert torch.equal(again.projection, quantizer.projection) and torch.equal(again.codes, quantizer.codes)
    other = RandomProjectionQuantizer(dim=12, codebooks=3, entries=50, code_dim=5, seed=8)
    assert not torch.equal(other.codes, quantizer.codes)


def test_the_loss_is_cross_entropy_on_masked_frames_and_the_targets_never_train(tmp_path):
    torch.manual_seed(0)
    model = Wav2Vec2ForPretraining(_config()).train()
    frozen = {name: buffer.clone() for name, buffer in model.quantizer.named_buffers()}
    waves = torch.randn(2, 20000)
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    out = model.pretraining_loss(waves, torch.tensor([20000, 15000]), generators)
    # the same loss computed directly from the pieces
    features = model.wav2vec2.features(waves, torch.tensor([20000, 15000]))
    encoded = model.wav2vec2.encode(features, mask_generators=[torch.Generator().manual_seed(i) for i in range(2)])
    mask = encoded.time_mask & ~features.padding_mask
    assert torch.equal(mask, encoded.time_mask)  # no masked padding
    targets = model.quantizer(features.raw).targets[mask]  # (M, 2)
    logits = model.bestrq_head(encoded.x[mask]).view(-1, 2, 64)
    expected = F.cross_entropy(logits.reshape(-1, 64), targets.reshape(-1))
    torch.testing.assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)
    assert out.num_targets == targets.numel() and 0 <= out.correct <= out.num_targets
    out.loss.backward()
    assert all(not b.requires_grad for b in model.quantizer.buffers())
    assert model.bestrq_head.weight.grad is not None and model.wav2vec2.feature_norm.weight.grad is not None
    # the targets come from the frames before the learned feature norm: training the norm cannot move them
    with torch.no_grad():
        model.wav2vec2.feature_norm.weight.mul_(3.0)
    assert torch.equal(model.quantizer(model.wav2vec2.features(waves[:1]).raw).targets,
                       model.quantizer(features.raw[:1]).targets)
    path = save_model(model, tmp_path / "m")
    loaded = load_model(path)
    for name, buffer in loaded.quantizer.named_buffers():
        assert torch.equal(buffer, frozen[name]), name  # saved with the model, not redrawn


def test_bestrq_needs_the_fbank_front_end():
    with pytest.raises(ValueError, match="objective: bestrq .* needs frontend: fbank"):
        tiny(objective="bestrq").validate()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    return [make_data_dir(root, "train_hi", 8, "hi", seconds=(1.0, 1.0), seed=1),
            make_data_dir(root, "train_ta", 8, "ta", seconds=(1.0, 1.0), seed=2)]


SHRINK = [
    "model.embed_dim=48",
    "model.ffn_dim=96",
    "model.num_layers=2",
    "model.fbank_bins=40",
    "model.conv_pos=8",
    "model.conv_pos_groups=4",
    "model.bestrq_entries=64",
    "model.attention={num_heads: 4, local: {heads: 2, window_left: 8, window_right: 8}, "
    "routing: {heads: 1, window: 8, clusters: 2, kmeans_decay: 0.5}, global_tokens: {heads: 1, tokens: 2, window: 4}}",
    "data.max_sample_size=16000",
    "data.min_sample_size=4000",
    "data.max_tokens=64000",
    "optim.warmup_updates=1",
    "run.tensorboard=false",
    "run.max_time_s=0",
]


def _sources(data):
    return "[" + ", ".join(f"{{path: {d}, language: {d.name[-2:]}}}" for d in data) + "]"


def test_recipe_pretrains_and_resumes_exactly(data, tmp_path):
    def config(out, *extra):
        return load_config(
            PretrainConfig,
            str(RECIPE),
            [
                f"data.train={_sources(data)}",
                f"run.output_dir={out}",
                "optim.max_updates=4",
                "run.save_every=2",
                "run.log_every=2",
                *SHRINK,
                *extra,
            ],
        )

    final = train(config(tmp_path / "straight"))
    log = (tmp_path / "straight" / "train.log").read_text()
    assert "accuracy=" in log and "code_perplexity=" in log
    assert isinstance(load_model(final), Wav2Vec2ForPretraining)
    train(config(tmp_path / "resumed", "run.stop_after=2"))
    train(config(tmp_path / "resumed"))
    one = load_file(str(final / "model.safetensors"))
    two = load_file(str(tmp_path / "resumed" / "checkpoints" / "update_00000004" / "model.safetensors"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4, msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(data, tmp_path):
    """2 ranks on half-batches == 1 process on full batches: the target count and the loss scaling are global."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    runs = {}
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
            "pretrain",
            str(RECIPE),
            f"data.train={_sources(data)}",
            f"run.output_dir={out}",
            "optim.max_updates=3",
            "run.save_every=3",
            "run.threads=1",
            *SHRINK,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[procs] = load_file(str(out / "checkpoints" / "update_00000003" / "model.safetensors"))
    for key in runs[1]:
        torch.testing.assert_close(
            runs[2][key], runs[1][key], atol=2e-5, rtol=1e-4, msg=lambda m, key=key: f"{key}: {m}"
        )
