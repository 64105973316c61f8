
"""CTC fine-tuning loop: pretrained init, freezing, rejected utterances, validation and best checkpoint."""
import json
from pathlib import Path

import pytest
import torch
from audio_fixtures import make_data_dir
from safetensors.torch import load_file

from seqattn import load_model
from seqattn.cli.main import main as cli_main
from seqattn.data.text import CharVocabulary
from seqattn.models.io import save_model
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPretraining, tiny
from seqattn.train.config_io import load_config
from seqattn.train.finetune import FinetuneConfig, train

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "wav2vec2" / "finetune_tiny.yaml"
TEXTS = ["नमस्ते दुनिया", "भारत देश", "हिंदी भाषा", "नमस्ते भारत"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    train_dir = make_data_dir(root, "train_hi", 12, "hi", seconds=(1.0, 1.5), seed=1, texts=TEXTS)
    valid_dir = make_data_dir(root, "dev_hi", 4, "hi", seconds=(1.0, 1.5), seed=2,
                              texts=["नमस्ते देश", "ক বাংলা", "भारत " * 40, "हिंदी दुनिया"])
    torch.manual_seed(0)
    pretrained = save_model(Wav2Vec2ForPretraining(tiny(normalize_waveform=True)), root / "pretrained")
    return train_dir, valid_dir, pretrained


def _config(setup, out, *extra):
    train_dir, valid_dir, pretrained = setup
    return load_config(FinetuneConfig, str(RECIPE), [
        f"init={pretrained}", f"data.train=[{{path: {train_dir}}}]", f"data.valid=[{{path: {valid_dir}}}]",
        f"run.output_dir={out}", "data.max_tokens=48000", "optim.max_updates=4", "validate_every=2",
        "run.log_every=2", "run.save_every=4", "freeze_updates=2", "run.tensorboard=false", *extra,
    ])


def test_finetune_validates_keeps_best_and_reports_rejections(setup, tmp_path):
    best = train(_config(setup, tmp_path))
    assert best.parent.name == "checkpoints" and (best / "tokens.json").is_file()
    rejected = (tmp_path / "rejected_utterances.txt").read_text(encoding="utf-8")
    assert "characters not in the vocabulary" in rejected and "U+0995" in rejected  # Bengali KA in a Hindi model
    assert "labels need" in rejected  # the 40-word transcript cannot fit its 1.5 s of frames
    log = (tmp_path / "train.log").read_text(encoding="utf-8")
    assert "valid update 2: wer=" in log and "cer=" in log
    assert (tmp_path / "checkpoints" / "BEST").is_file()
    model = load_model(best)
    assert isinstance(model, Wav2Vec2ForCTC)
    vocab = CharVocabulary.load(best / "tokens.json")
    assert model.config.vocab_size == len(vocab) and model.config.normalize_waveform  # carried from init


@pytest.mark.parametrize("valid", ["rejected", "none"])
def test_no_validation_utterances_keep_the_final_model_as_best(setup, tmp_path, valid):
    """Every validation utterance rejected (or no data.valid at all): BEST still names a loadable model, the
    final one, and the log says why (a recipe that links exp/ft/best must never point at nothing)."""
    root = tmp_path / "data"
    if valid == "rejected":
        source = make_data_dir(root, "dev_bn", 2, "bn", seconds=(1.0, 1.2), seed=3, texts=["বাংলা ভাষা"])
        override = f"data.valid=[{{path: {source}}}]"
    else:
        override = "data.valid=[]"
    best = train(_config(setup, tmp_path / "out", override, "optim.max_updates=3", "run.save_every=2"))
    assert best.name == "update_00000003"
    assert (tmp_path / "out" / "checkpoints" / "BEST").read_text().split() == ["update_00000003"]
    assert isinstance(load_model(best), Wav2Vec2ForCTC) and (best / "tokens.json").is_file()
    log = (tmp_path / "out" / "train.log").read_text(encoding="utf-8")
    why = "all 2 were rejected, see rejected_utterances.txt" if valid == "rejected" else "data.valid is empty"
    assert f"warning: no validation utterances ({why})" in log


def test_backbone_comes_from_init_and_stays_frozen(setup, tmp_path):
    train(_config(setup, tmp_path, "optim.max_updates=2", "run.save_every=2", "validate_every=0"))
    tuned = load_file(str(tmp_path / "checkpoints" / "update_00000002" / "model.safetensors"))
    pretrained = load_file(str(setup[2] / "model.safetensors"))
    for key, value in pretrained.items():
        if key.startswith("wav2vec2."):
            assert torch.equal(tuned[key], value), key  # frozen for the first 2 updates (and the CNN always)
    assert not torch.equal(tuned["head.weight"],
                           Wav2Vec2ForCTC(tiny(vocab_size=tuned["head.weight"].shape[0])).head.weight)


def test_model_settings_can_turn_local_heads_into_dilated_and_global_heads(setup, tmp_path):
    """A pretrained head re-purposed at fine-tuning keeps its projections; global heads get fresh summary
    queries; overrides whose weights cannot come from init (routed heads' centroids) stay an error."""
    from seqattn.train.finetune import build_model
    from seqattn.train.loop import TrainingError

    heads = "{num_heads: 4, local: {heads: 2}, dilated: {heads: 1, dilation: 2, window: 3}, global_tokens: {heads: 1}}"
    model = build_model(_config(setup, tmp_path, f"model.attention={heads}"), vocab_size=7)
    pretrained = load_file(str(setup[2] / "model.safetensors"))
    state = model.state_dict()
    for key, value in pretrained.items():
        if key.startswith("wav2vec2.encoder"):
            assert torch.equal(state[key], value), key
    groups = [g[0] for g in model.wav2vec2.encoder.layers[0].attention.head_groups()]
    assert groups == ["local", "dilated", "global"]
    assert state["wav2vec2.encoder.layers.1.attention.global_attention.queries"].shape == (1, 4, 24)
    train(_config(setup, tmp_path, f"model.attention={heads}", "freeze_updates=0",
                  "optim.max_updates=2", "run.save_every=2", "validate_every=0"))
    with pytest.raises(TrainingError, match="do not fit"):
        build_model(_config(setup, tmp_path, "model.attention={num_heads: 4, routing: {heads: 2}}"), 7)


def test_unfrozen_transformer_trains_but_cnn_stays(setup, tmp_path):
    train(_config(setup, tmp_path, "freeze_updates=0", "validate_every=0"))
    tuned = load_file(str(tmp_path / "checkpoints" / "update_00000004" / "model.safetensors"))
    pretrained = load_file(str(setup[2] / "model.safetensors"))
    assert not torch.equal(tuned["wav2vec2.encoder.layers.0.ffn.fc1.weight"],
                           pretrained["wav2vec2.encoder.layers.0.ffn.fc1.weight"])
    assert torch.equal(tuned["wav2vec2.feature_extractor.conv_layers.0.conv.weight"],
                       pretrained["wav2vec2.feature_extractor.conv_layers.0.conv.weight"])


def test_cli_errors(setup, tmp_path, capsys):
    assert cli_main(["finetune", str(RECIPE), "freeze_update=3"]) == 2
    assert "unknown config key(s): freeze_update" in capsys.readouterr().err
    assert cli_main(["finetune", str(RECIPE), f"init={tmp_path}/missing", f"data.train=[{{path: {setup[0]}}}]",
                     f"run.output_dir={tmp_path}/o"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _checkpoint_weights(out, step):
    return load_file(str(out / "checkpoints" / f"update_{step:08d}" / "model.safetensors"))


def test_resume_continues_exactly(setup, tmp_path):
    """2 updates, stop, resume to 4 == 4 updates in one go (data order, masking, optimizer and schedule)."""
    straight = tmp_path / "straight"
    train(_config(setup, straight, "validate_every=0", "run.save_every=2"))
    resumed = tmp_path / "resumed"
    train(_config(setup, resumed, "validate_every=0", "run.save_every=2", "run.stop_after=2"))
    assert not (resumed / "checkpoints" / "update_00000004").exists()
    train(_config(setup, resumed, "validate_every=0", "run.save_every=2"))
    one, two = _checkpoint_weights(straight, 4), _checkpoint_weights(resumed, 4)
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-4, msg=lambda m, key=key: f"{key}: {m}")
    assert "resumed from" in (resumed / "train.log").read_text(encoding="utf-8")


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(setup, tmp_path):
    import os
    import subprocess
    import sys

    _, valid_dir, pretrained = setup
    # Equal lengths: with padding, the GroupNorm CNN would see different padding when the batch is split
    # over ranks (as in fairseq). No dropout, whose random streams differ between 1 and 2 processes, and no
    # masking: fine-tuning draws each rank's time masks for its own share of the batch (the masked count
    # is not synchronised across ranks as in pretraining), so masks match in distribution, not bitwise.
    train_dir = make_data_dir(tmp_path, "train_equal", 8, "hi", seconds=(1.2, 1.2), seed=5, texts=TEXTS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    runs = {}
    for procs in (1, 2):
        out = tmp_path / f"procs{procs}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port",
               str(29600 + procs + os.getpid() % 1000), "-m", "seqattn.cli.main", "finetune", str(RECIPE),
               f"init={pretrained}", f"data.train=[{{path: {train_dir}}}]", f"data.valid=[{{path: {valid_dir}}}]",
               f"run.output_dir={out}", "data.max_tokens=48000", "optim.max_updates=2", "validate_every=2",
               "run.save_every=2", "freeze_updates=0", "run.tensorboard=false", "run.threads=1",
               "model.mask_prob=0.0", "model.mask_channel_prob=0.0", "model.layerdrop=0.0", "model.dropout=0.0"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[procs] = _checkpoint_weights(out, 2)
        assert "valid update 2: wer=" in (out / "train.log").read_text(encoding="utf-8")
    # Float noise of the all-reduce (summation order) can move an Adam step on a near-zero gradient by a
    # fraction of lr; any real difference (masks, padding, loss scaling) moves hundreds of weights by ~lr.
    for key in runs[1]:
        torch.testing.assert_close(runs[2][key], runs[1][key], atol=1e-4, rtol=1e-3,
                                   msg=lambda m, key=key: f"{key}: {m}")


def test_training_links_best_and_last_that_load_model_accepts(setup, tmp_path):
    """exp/ft/best and exp/ft/last work without a recipe's help: links that follow BEST and LAST."""
    train(_config(setup, tmp_path, "optim.max_updates=4", "run.save_every=1", "validate_every=2"))
    checkpoints = tmp_path / "checkpoints"
    assert (tmp_path / "last").resolve() == (checkpoints / "update_00000004").resolve()
    best_name = (checkpoints / "BEST").read_text().split()[0]
    assert (tmp_path / "best").resolve() == (checkpoints / best_name).resolve()
    assert isinstance(load_model(tmp_path / "best"), Wav2Vec2ForCTC) and (tmp_path / "last" / "tokens.json").is_file()
    assert (tmp_path / "best").is_symlink() and not (tmp_path / "best").readlink().is_absolute()  # movable


FBANK_RECIPE = REPO / "recipes" / "wav2vec2" / "finetune_fbank_conformer_cpu.yaml"


def _fbank_config(setup, out, *extra):
    """The fbank Conformer recipe from scratch, shrunk to test size."""
    train_dir, valid_dir, _ = setup
    return load_config(FinetuneConfig, str(FBANK_RECIPE), [
        f"data.train=[{{path: {train_dir}, language: hi}}]", f"data.valid=[{{path: {valid_dir}, language: hi}}]",
        f"run.output_dir={out}", "data.max_tokens=48000", "optim.max_updates=4", "validate_every=2",
        "run.log_every=2", "run.save_every=4", "run.tensorboard=false", "run.max_time_s=0",
        "model.embed_dim=48", "model.ffn_dim=96", "model.num_layers=2", "model.fbank_bins=40", "model.conv_pos=8",
        "model.conv_pos_groups=4", "model.final_dim=16", *extra,
    ])


@pytest.mark.parametrize("subsampling", ["stack", "conv"])
def test_fbank_conformer_recipe_trains_from_scratch_and_transcribes(setup, tmp_path, capsys, subsampling):
    best = train(_fbank_config(setup, tmp_path / "ft", f"model.fbank_subsampling={subsampling}",
                               "model.fbank_conv_channels=8", "model.fbank_freq_masks=1"))
    model = load_model(best)
    assert isinstance(model, Wav2Vec2ForCTC)
    assert model.config.frontend == "fbank" and model.config.encoder_block == "conformer"
    assert model.config.fbank_subsampling == subsampling
    assert "valid update 2: wer=" in (tmp_path / "ft" / "train.log").read_text(encoding="utf-8")
    assert cli_main(["transcribe", str(best), "--data-dir", str(setup[1]), "--output-dir", str(tmp_path / "out"),
                     "--quiet"]) == 0
    assert "%WER" in capsys.readouterr().out  # a data dir with references is scored


def test_front_end_mismatches_and_too_low_frame_rates_are_one_line_errors(setup, tmp_path):
    from seqattn.train.finetune import build_model
    from seqattn.train.loop import TrainingError

    # a raw-CNN pretrained model cannot be fine-tuned as an fbank model: the error names the key
    with pytest.raises(TrainingError, match=r"model.frontend: .* was pretrained with frontend='cnn'"):
        build_model(_config(setup, tmp_path, "model.frontend=fbank"), vocab_size=7)
    with pytest.raises(TrainingError, match=r"model.encoder_block: .*encoder_block='transformer'"):
        build_model(_config(setup, tmp_path, "model.encoder_block=conformer"), vocab_size=7)
    with pytest.raises(TrainingError, match=r"model.fbank_subsampling: .*fbank_subsampling='stack'"):
        build_model(_config(setup, tmp_path, "model.fbank_subsampling=conv"), vocab_size=7)
    # 32 stacked frames = 320 ms: every 1-1.5 s training utterance has more labels than frames
    with pytest.raises(TrainingError, match=r"model.fbank_stack: frames of 320 ms leave fewer CTC frames than labels "
                                            r"in 12 of 12 training utterances"):
        train(_fbank_config(setup, tmp_path / "slow", "model.fbank_stack=32", "model.fbank_subsampling=stack"))
    listed = (tmp_path / "slow" / "rejected_utterances.txt").read_text(encoding="utf-8").splitlines()
    assert sum(line.startswith("train ") and "labels need" in line for line in listed) == 12  # the list it names


def test_shortest_first_epochs_order_only_the_first_epochs(setup, tmp_path):
    """data.shortest_first_epochs=1: epoch 0 runs its batches shortest first, epoch 1 is shuffled again (the
    order is a function of the epoch and the seed alone, so a resumed run sees the same batches)."""
    from seqattn.data.labelled import LabelledItem
    from seqattn.train.distributed import DistributedContext
    from seqattn.train.finetune import FinetuneTask

    config = _config(setup, tmp_path / "order", "data.shortest_first_epochs=1", "data.max_tokens=30000")
    sizes = [int(s) for s in torch.randint(4000, 24000, (60,), generator=torch.Generator().manual_seed(5))]
    items = [LabelledItem(f"u{i}", None, "hi", size, "a", [1]) for i, size in enumerate(sizes)]
    task = FinetuneTask(config, Wav2Vec2ForCTC(tiny(vocab_size=5)), None, items, [], DistributedContext(), None)
    longest = [[max(sizes[i] for i in batch) for batch in task.epoch_dataset(epoch).batches] for epoch in (0, 1)]
    assert longest[0] == sorted(longest[0])
    assert longest[1] != sorted(longest[1])


def test_model_keys_apply_on_the_init_and_model_overrides_is_refused(setup, tmp_path):
    """One rule for both starts: the model keys given change the init's config, the others stay the init's."""
    from seqattn.train.config_io import ConfigError
    from seqattn.train.finetune import model_config_for

    pretrained = json.loads((setup[2] / "config.json").read_text())["config"]
    config = model_config_for(_config(setup, tmp_path, "model.mask_prob=0.25", "model.attention.num_heads=2"), 7)
    assert config.mask_prob == 0.25 and config.attention.num_heads == 2
    # the recipe's model keys apply on the init too; every other key is the init's
    assert config.mask_length == 5 != pretrained["mask_length"] and config.dropout == 0.05
    assert config.embed_dim == pretrained["embed_dim"] and config.num_negatives == pretrained["num_negatives"]
    with pytest.raises(ConfigError, match=r"model_overrides is now model \(fine-tuning applies its keys"):
        _config(setup, tmp_path, "model_overrides={mask_prob: 0.1}")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\): model.mask_prop"):
        _config(setup, tmp_path, "model.mask_prop=0.1")
