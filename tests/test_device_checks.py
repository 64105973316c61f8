"""GPU device bugs caught on the CPU: models built on fake CUDA tensors (``FakeTensorMode``), so that a CPU
tensor mixed into a CUDA computation raises, and every read of a device value by the host (``.item()``,
``float()``, ``bool()`` of a tensor, a copy to the CPU) is counted. The forwards must read nothing; the
validation loops read what docs/DESIGN.md ("Host reads") lists, and nothing else.

Fed exactly as the trainers feed them: batches from the real data pipeline, moved by the loop's
``host_prepare`` and ``to_device``."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_fixtures import make_data_dir
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from seqattn.data.labelled import PaddedBatches, prepare, read_texts
from seqattn.data.text import CharVocabulary
from seqattn.models.lm import TransformerLM
from seqattn.models.lm.presets import tiny as tiny_lm
from seqattn.models.wav2vec2 import Wav2Vec2ForCTC, Wav2Vec2ForPretraining, tiny
from seqattn.models.wav2vec2.masking import generators_for
from seqattn.nn import AttentionConfig, MultiHeadAttention
from seqattn.nn.backend import use_backend
from seqattn.nn.heads import DilatedHeads, GlobalTokenHeads, LocalHeads, RoutingHeads
from seqattn.train.distributed import DistributedContext
from seqattn.utils.device import to_device

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda", 0)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


class HostReads(TorchDispatchMode):
    """Counts the host's reads of device values (scalar reads and device-to-host copies), answering scalar
    reads with zero so that the code under test can go on."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default and isinstance(args[0], FakeTensor):
            tensor = args[0]
            if tensor.device.type == "cpu":  # host arithmetic on small tensors made in the fake mode: the fake
                try:  # mode knows their values when it kept them as constants
                    return func(*args, **kwargs)
                except DataDependentOutputException:
                    pass
            else:
                self.reads.append("scalar read")
            return False if tensor.dtype == torch.bool else (0.0 if tensor.is_floating_point() else 0)
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            source = args[1] if func is torch.ops.aten.copy_.default else args[0]
            target = args[0].device if func is torch.ops.aten.copy_.default else kwargs.get("device")
            if source.device.type == "cuda" and target is not None and torch.device(target).type == "cpu":
                self.reads.append("copy to the host")
        return func(*args, **kwargs)


@contextmanager
def on_host():
    """Host code inside a fake-CUDA block (the data pipeline, a task's host_prepare): real tensors again, as
    in a DataLoader worker or the update loop before ``to_device``."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        yield


@contextmanager
def checked(backend: str):
    """The GPU's default backend (flex: a host read raises) or the chunked one, where every host read and
    copy to the host is counted and must be none (FlexAttention cannot run under the counting mode)."""
    with use_backend(backend), fake_cuda(count_reads=backend == "chunked") as reads:
        yield reads
    assert reads.reads == [], reads.reads


BACKENDS = pytest.mark.parametrize("backend", ["flex", "chunked"])


@contextmanager
def fake_cuda(count_reads: bool = False):
    """Run the block on fake CUDA tensors (modules moved there with ``.to(CUDA)``, as the trainers move
    theirs; host code such as the data pipeline still makes CPU tensors). Real CPU tensors may come
    in (as batches do), and mixing one into a CUDA op raises. A scalar read of a device value raises
    (``DataDependentOutputException``), unless ``count_reads``: then it is counted, with the copies to the
    host, by the :class:`HostReads` the block gets. (FlexAttention compiles itself even in eager mode, which
    a counting mode prevents, so the counted checks run models with dense heads.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with FakeTensorMode(allow_non_fake_inputs=True):
            reads = HostReads()
            if count_reads:
                with reads:
                    yield reads
            else:
                yield reads


def on_cuda(build):
    """A module built with its parameters on (fake) cuda:0."""
    with torch.device(CUDA):
        return build()


def pretraining_config(objective: str):
    """The tiny pretraining model of ``objective`` (BEST-RQ on the filterbank front end it reads)."""
    return tiny(objective=objective, mask_prob=0.5, **(dict(frontend="fbank") if objective == "bestrq" else {}))


def pretraining_model_on_cuda(config):
    model = on_cuda(lambda: Wav2Vec2ForPretraining(config)).train()
    if config.objective == "bestrq":  # its frozen projections are built on the CPU: the trainer's .to() moves them
        model.quantizer.projection = model.quantizer.projection.to(CUDA)
        model.quantizer.codes = model.quantizer.codes.to(CUDA)
    return model


def dense_lm_config():
    """The tiny LM with full-attention heads only (FlexAttention cannot run under the read-counting mode)."""
    lm = tiny_lm()
    return dataclasses.replace(lm, attention=lm.attention.replace(local={"heads": 0}, routing={"heads": 0}))


HEAD_KINDS = {
    "local": dict(local=dict(heads=4, window_left=8, window_right=8)),
    "per-head windows": dict(local=dict(heads=4, windows=[[8, 8], [4, 4], [40, 3], [2, 0]])),
    "balanced routing": dict(routing=dict(heads=4, clusters=4, window=16)),
    "causal routing": dict(
        causal=True, local=dict(window_right=0), routing=dict(heads=4, clusters=4, window=16, shared_qk=True)
    ),
    "dilated": dict(dilated=dict(heads=4)),
    "global": dict(global_tokens=dict(heads=4)),
    "causal global": dict(causal=True, local=dict(window_right=0), global_tokens=dict(heads=4)),
    "block routed": dict(block_routed=dict(heads=4, block=32)),
    "causal block routed": dict(causal=True, block_routed=dict(heads=4, block=32)),
    "shifted windows": dict(shifted_window=dict(heads=4, window=32)),
    "pooled": dict(pooled=dict(heads=4)),
    "full": dict(),
    "mixed": dict(local=dict(heads=1), routing=dict(heads=1), dilated=dict(heads=1), global_tokens=dict(heads=1)),
}


@BACKENDS
@pytest.mark.parametrize("kind", list(HEAD_KINDS))
def test_every_head_kind_runs_on_cuda_without_host_reads(kind, backend):
    if backend == "chunked" and "block routed" in kind:
        pytest.skip(
            "the chunked kernel lays block-routed heads out in tiles sized by the gate's choices (a read "
            "by design, on the CPU); off the CPU they run on flex, checked above"
        )
    with checked(backend):
        layer = on_cuda(
            lambda: MultiHeadAttention(64, AttentionConfig(num_heads=4).replace(**HEAD_KINDS[kind]))
        ).train()
        x = torch.randn(2, 301, 64, device=CUDA)
        causal = HEAD_KINDS[kind].get("causal", False)
        mask = None if causal else to_device(torch.arange(301)[None] >= torch.tensor([[301], [250]]), CUDA)
        result = layer(x, mask)
        assert result.out.device == CUDA and result.out.shape == (2, 301, 64)


CTC_MODELS = {
    "cnn, local heads": dict(
        attention=AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=8, window_right=8))
    ),
    "cnn, routed heads": dict(
        attention=AttentionConfig(num_heads=4, routing=RoutingHeads(heads=2, clusters=4, window=8))
    ),
    "cnn, dilated + global": dict(
        attention=AttentionConfig(num_heads=4, dilated=DilatedHeads(heads=2), global_tokens=GlobalTokenHeads(heads=2))
    ),
    "fbank conv, conformer": dict(
        frontend="fbank",
        fbank_subsampling="conv",
        encoder_block="conformer",
        fbank_freq_masks=2,
        attention=AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=8, window_right=8)),
    ),
    "fbank stacked": dict(frontend="fbank", fbank_freq_masks=2, mask_channel_prob=0.1),
}


@BACKENDS
@pytest.mark.parametrize("name", list(CTC_MODELS))
def test_ctc_models_train_and_infer_on_cuda_without_host_reads(name, backend):
    """The fine-tuning forward as the trainer runs it (masks drawn on the host, then moved) and inference."""
    lengths = torch.tensor([16000, 12000])
    host = Wav2Vec2ForCTC(tiny(vocab_size=10, mask_prob=0.3, **CTC_MODELS[name]))
    draws = host.draw_training(lengths, 16000, generators_for([1, 2]))
    with checked(backend):
        model = on_cuda(lambda: Wav2Vec2ForCTC(tiny(vocab_size=10, mask_prob=0.3, **CTC_MODELS[name]))).train()
        waves = to_device(torch.zeros(2, 16000), CUDA)
        logits, frames, aux = model.training_forward(waves, to_device(lengths, CUDA), draws=to_device(draws, CUDA))
        assert logits.device == CUDA
        model.eval()
        logits, frames = model(waves, to_device(lengths, CUDA))
        assert logits.device == CUDA


def nccl_like_sum(tensor: torch.Tensor) -> torch.Tensor:
    """A stand-in for the differentiable all-reduce that refuses what NCCL refuses: tensors off the GPU."""
    if tensor.device.type != "cuda":
        raise RuntimeError(f"NCCL reduces CUDA tensors only, got a {tensor.device} tensor")
    return tensor * 1


@BACKENDS
@pytest.mark.parametrize("objective", ["contrastive", "bestrq"])
def test_pretraining_losses_run_under_a_gpu_all_reduce_without_host_reads(objective, backend):
    """Both objectives, with the DDP reduce (a CPU tensor in the contrastive target count failed NCCL)."""
    config = pretraining_config(objective)
    draws = Wav2Vec2ForPretraining(config).draw_training(None, 16000, generators_for([3, 4]))
    with checked(backend):
        model = pretraining_model_on_cuda(config)
        out = model.pretraining_loss(
            to_device(torch.zeros(2, 16000), CUDA),
            None,
            world_size=2,
            reduce=nccl_like_sum,
            draws=to_device(draws, CUDA),
        )
        assert out.loss.device == CUDA


@BACKENDS
def test_language_model_forward_and_loss_on_cuda_without_host_reads(backend):
    with checked(backend):
        model = on_cuda(lambda: TransformerLM(tiny_lm())).train()
        tokens = torch.randint(0, 50, (2, 65), device=CUDA)
        nll, loss = model.loss(tokens[:, :-1], tokens[:, 1:])
        assert loss.device == CUDA
        model.eval()
        assert model(tokens[:, :-1]).logits.device == CUDA


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("device_checks")
    data = make_data_dir(root, "dev_hi", 4, "hi", seconds=(0.6, 1.0), seed=3, texts=["नमस्ते भारत", "भारत देश"])
    texts = read_texts([(str(data), None)])
    vocab = CharVocabulary.build([t for t, _ in texts])
    return data, vocab


def run_on_host(monkeypatch, owner, *names):
    """Make ``owner``'s methods ``names`` host code inside the fake-CUDA blocks (see :func:`on_host`)."""
    for name in names:
        original = getattr(owner, name)

        def wrapped(*args, original=original, **kwargs):
            with on_host():
                return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapped)


@pytest.fixture
def host_pipeline(monkeypatch):
    """The data pipeline makes real CPU tensors even inside the fake mode, as it does in a DataLoader."""
    run_on_host(monkeypatch, PaddedBatches, "__init__", "__getitem__")


def test_finetune_validation_feeds_the_model_on_its_device(labelled, host_pipeline):
    """evaluate() gets its batches from the data pipeline on the CPU; it must move them to the model's
    device (it fed CPU tensors to a CUDA model) and read back one argmax per batch, nothing else."""
    from seqattn.train.finetune import FinetuneData, evaluate

    data, vocab = labelled
    host_model = Wav2Vec2ForCTC(tiny(vocab_size=len(vocab)))
    items = prepare(
        [(str(data), None)],
        vocab,
        16000,
        1000,
        480000,
        lambda s: int(host_model.wav2vec2.output_lengths(torch.tensor([s]))[0]),
    ).items
    batches = len(PaddedBatches(items, 0, 0, FinetuneData().max_tokens, 16000, False, shuffle=False))
    with fake_cuda(count_reads=True) as reads:
        model = on_cuda(lambda: Wav2Vec2ForCTC(tiny(vocab_size=len(vocab))))
        scores = evaluate(model, items, vocab, FinetuneData(), DistributedContext())
    assert set(scores) == {"wer", "cer"}
    assert reads.reads == ["copy to the host"] * batches


def test_lm_validation_feeds_the_model_on_its_device():
    """validate() built each window on the CPU and gave it to the model; now on the model's device, with
    one read of the summed loss for the whole validation set."""
    from seqattn.train.lm import LMTask, LMTrainConfig
    from seqattn.train.monitor import TrainMonitor

    config = LMTrainConfig(model=dense_lm_config())
    config.data.seq_len = 32
    valid = np.random.default_rng(0).integers(0, 50, 200).astype(np.int32)
    with fake_cuda(count_reads=True) as reads:
        model = on_cuda(lambda: TransformerLM(config.model))
        task = LMTask(config, model, valid, valid, DistributedContext(), TrainMonitor(Path("."), False, 1, 0, "t"))
        task.validate(1)
    assert reads.reads == ["scalar read"]


def test_training_draws_move_to_the_device_and_stay_on_the_host_otherwise():
    model = Wav2Vec2ForPretraining(tiny(mask_prob=0.5))
    draws = model.draw_training(None, 16000, generators_for([1, 2]))
    assert draws.time.device.type == "cpu" and draws.negatives.shape[1:] == draws.time_index.shape
    # the same utterance seeds give the same draws (resume, and any rank or batch the utterance lands in)
    again = model.draw_training(None, 16000, generators_for([1, 2]))
    assert torch.equal(draws.time, again.time) and torch.equal(draws.gumbel, again.gumbel)
    with fake_cuda():
        moved = to_device({"draws": draws}, CUDA)["draws"]
        assert moved.time.device == CUDA and moved.gumbel.device == CUDA


NAN_DRIVER = textwrap.dedent("""
    import sys
    import torch
    from seqattn.models.wav2vec2 import Wav2Vec2ForCTC
    from seqattn.cli.main import main

    original = Wav2Vec2ForCTC.training_forward
    calls = {"n": 0}

    def patched(self, *args, **kwargs):  # the second micro-batch's loss becomes NaN
        logits, frames, aux = original(self, *args, **kwargs)
        calls["n"] += 1
        return (logits * float("nan") if calls["n"] == 2 else logits), frames, aux

    Wav2Vec2ForCTC.training_forward = patched
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_non_finite_step_is_skipped_under_ddp_with_frozen_parameters(labelled, tmp_path):
    """Two DDP processes (gloo) fine-tune with the CNN and, for the first updates, the encoder frozen, and a
    NaN loss in update 2: the update is skipped on both ranks and training goes on. Back-propagating zeros
    through every parameter instead made DDP raise "Expected to mark a variable ready only once"."""
    from seqattn.models.io import save_model

    data, _ = labelled
    train_dir = make_data_dir(tmp_path, "train_hi", 8, "hi", seconds=(0.8, 0.8), seed=4, texts=["नमस्ते भारत", "भारत देश"])
    torch.manual_seed(0)
    pretrained = save_model(Wav2Vec2ForPretraining(tiny()), tmp_path / "pretrained")
    driver = tmp_path / "driver.py"
    driver.write_text(NAN_DRIVER)
    out = tmp_path / "ft"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(29700 + os.getpid() % 1000),
        str(driver),
        "finetune",
        str(REPO / "recipes" / "wav2vec2" / "finetune_tiny.yaml"),
        f"init={pretrained}",
        f"data.train=[{{path: {train_dir}}}]",
        "data.valid=[]",
        f"run.output_dir={out}",
        "data.max_tokens=40000",
        "optim.max_updates=4",
        "validate_every=0",
        "run.save_every=4",
        "freeze_updates=3",
        "freeze_cnn=true",
        "run.tensorboard=false",
        "run.threads=1",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (out / "train.log").read_text(encoding="utf-8")
    assert "non-finite loss or gradient at update 1: step skipped (1 in a row, 1 in total)" in log
    state = torch.load(out / "checkpoints" / "update_00000004" / "training_state.pt", weights_only=True)
    assert state["position"]["skipped_total"] == 1


# --- each trainer's step as the update loop runs it: pipeline batch -> host_prepare -> to_device -> forward ---


def _step_reads(task, batch, backend: str) -> list[str]:
    with use_backend(backend), fake_cuda(count_reads=backend == "chunked") as reads:
        with on_host():
            prepared = task.host_prepare(batch)
        output = task.forward(to_device(prepared, CUDA))
        assert output.loss.device == CUDA
    return reads.reads


def ctc_loss_as_cuda_takes_it(log_probs, targets, input_lengths, target_lengths, **kwargs):
    """A stand-in for ``F.ctc_loss``, which has no fake-tensor implementation: it checks the arguments'
    devices as PyTorch's CUDA kernel takes them (scores and labels on the GPU, both length tensors on the
    host, so that torch never has to read them back) and returns a loss of the right kind."""
    assert log_probs.device == CUDA and targets.device == CUDA
    assert input_lengths.device.type == "cpu" and target_lengths.device.type == "cpu"
    return log_probs.sum() * 0


@BACKENDS
def test_finetune_step_as_the_loop_feeds_it(labelled, backend, monkeypatch):
    from seqattn.train import finetune
    from seqattn.train.finetune import FinetuneConfig, FinetuneTask
    from seqattn.train.monitor import TrainMonitor

    monkeypatch.setattr(finetune.F, "ctc_loss", ctc_loss_as_cuda_takes_it)
    data, vocab = labelled
    attention = AttentionConfig(
        num_heads=4,
        local=LocalHeads(heads=2, window_left=8, window_right=8),
        routing=RoutingHeads(heads=2, clusters=3, window=8),
    )
    model_config = tiny(vocab_size=len(vocab), mask_prob=0.3, attention=attention)
    config = FinetuneConfig(model=model_config.to_dict())
    host_model = Wav2Vec2ForCTC(model_config)
    items = prepare(
        [(str(data), None)],
        vocab,
        16000,
        1000,
        480000,
        lambda s: int(host_model.wav2vec2.output_lengths(torch.tensor([s]))[0]),
    ).items
    batch = PaddedBatches(items, 0, 0, 400_000, 16000, False)[0]
    with fake_cuda():
        model = on_cuda(lambda: Wav2Vec2ForCTC(model_config)).train()
    task = FinetuneTask(
        config, model, vocab, items, [], DistributedContext(), TrainMonitor(Path("."), False, 1, 0, "t")
    )
    task.frozen = False
    assert _step_reads(task, batch, backend) == []


@BACKENDS
@pytest.mark.parametrize("objective", ["contrastive", "bestrq"])
def test_pretraining_step_as_the_loop_feeds_it(labelled, objective, backend):
    from seqattn.data.unlabelled import CroppedBatches, plan_epoch, scan
    from seqattn.train.pretrain import PretrainConfig, PretrainTask

    data, _ = labelled
    config = PretrainConfig(model=pretraining_config(objective))
    items = scan([(str(data), "hi")], 16000, 8000, progress=False).items
    plan = plan_epoch(items, 0, 1, 0.7, 400_000, 16000)
    batch = CroppedBatches(items, plan, 1, 16000, 16000, False)[0]
    with fake_cuda():
        model = pretraining_model_on_cuda(config.model)
    task = PretrainTask(config, model, items, DistributedContext())
    assert _step_reads(task, batch, backend) == []


@BACKENDS
def test_lm_step_as_the_loop_feeds_it(backend):
    from seqattn.data.lm_corpus import PackedBatches
    from seqattn.train.lm import LMTask, LMTrainConfig
    from seqattn.train.monitor import TrainMonitor

    config = LMTrainConfig(model=tiny_lm())
    tokens = np.random.default_rng(1).integers(0, 50, 2000).astype(np.int32)
    batch = PackedBatches(tokens, 32, 4, 0, 1)[0]
    with fake_cuda():
        model = on_cuda(lambda: TransformerLM(config.model)).train()
    task = LMTask(config, model, tokens, None, DistributedContext(), TrainMonitor(Path("."), False, 1, 0, "t"))
    assert _step_reads(task, batch, backend) == []


# --- inference: transcription (batched, chunked, streamed), eval-lm, generation, analysis weights ---------------


def _wav(path: Path, seconds: float, seed: int) -> Path:
    import soundfile

    rng = np.random.default_rng(seed)
    soundfile.write(path, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
    return path


@pytest.mark.parametrize("mode", ["batched", "chunked", "streamed"])
def test_transcription_paths_read_only_the_greedy_path(tmp_path, monkeypatch, mode):
    """Audio is read on the host and moved; the only device values read back are each input's greedy path
    (one transfer per input on a GPU; under the fake mode its ``tolist`` reads one scalar per frame), and the
    streamed path keeps each window's path on the device until the input ends."""
    from seqattn.data.audio import AudioSource
    from seqattn.data.audio_stream import StreamingAudio
    from seqattn.decode import transcribe as transcribe_module
    from seqattn.decode.transcribe import InputItem, Loaded, Transcriber

    original_load = transcribe_module.load_audio
    monkeypatch.setattr(transcribe_module, "load_audio", lambda *a, **k: _host_call(original_load, *a, **k))
    run_on_host(monkeypatch, StreamingAudio, "__init__", "read", "statistics")
    original_prepared = Transcriber._prepared

    def prepared(self, index, item, wave):  # the silence check and normalisation run on the host, then the move
        device, self.device = self.device, torch.device("cpu")
        try:
            with on_host():
                outcome = original_prepared(self, index, item, wave)
        finally:
            self.device = device
        return dataclasses.replace(outcome, wave=outcome.wave.to(device)) if isinstance(outcome, Loaded) else outcome

    monkeypatch.setattr(Transcriber, "_prepared", prepared)
    seconds = {"batched": [1.0, 1.2, 0.9], "chunked": [3.0], "streamed": [3.0]}[mode]
    items = [InputItem(f"u{i}", AudioSource(str(_wav(tmp_path / f"u{i}.wav", s, i)))) for i, s in enumerate(seconds)]
    vocab = CharVocabulary.build(["नमस्ते भारत"])
    attention = (
        AttentionConfig(num_heads=4)
        if mode != "streamed"
        else AttentionConfig(num_heads=4, local=LocalHeads(heads=4, window_left=8, window_right=8))
    )
    settings = {
        "batched": dict(batch_size=3, chunk_seconds=0),
        "chunked": dict(chunk_seconds=1.0),
        "streamed": dict(chunk_seconds=0, stream_seconds=1.0),
    }[mode]
    with use_backend("chunked"), fake_cuda(count_reads=True) as reads:
        model = on_cuda(lambda: Wav2Vec2ForCTC(tiny(vocab_size=len(vocab), attention=attention))).eval()
        transcriber = Transcriber(model, vocab, timestamps=False, **settings)
        if mode == "streamed":
            transcriber.inference.stream_logits = _small_windows(transcriber.inference.stream_logits)
        result = transcriber.run(items, progress=False)
    assert not result.failures and len(result.transcripts) == len(items) and not result.warnings
    frames = sum(transcriber.inference.num_frames(int(s * 16000)) for s in seconds)
    assert frames > 0 and reads.reads == ["scalar read"] * frames


def _host_call(function, *args, **kwargs):
    with on_host():
        return function(*args, **kwargs)


def _small_windows(stream_logits):
    """Streaming in windows of 50 frames (the default window is 11 minutes), so the test streams several."""
    return lambda read, num_samples, window_frames=None: stream_logits(read, num_samples, window_frames=50)


def test_eval_lm_reads_the_device_once_per_stream():
    from seqattn.evaluate.perplexity import WindowScorer

    config = dense_lm_config()
    tokens = np.random.default_rng(2).integers(0, 50, 300).tolist()
    with fake_cuda(count_reads=True) as reads:
        model = on_cuda(lambda: TransformerLM(config)).eval()
        scorer = WindowScorer(model, context=32, stride=16, batch_size=4, device=CUDA)
        _, scored = scorer.score([tokens[:100], tokens[100:]])
    assert scored == 299 and reads.reads == ["scalar read"]


def test_generation_reads_the_device_only_to_look_for_the_stop_token():
    from seqattn.models.lm import generate
    from seqattn.models.lm.generate import STOP_CHECK_EVERY

    with use_backend("chunked"), fake_cuda(count_reads=True) as reads:
        model = on_cuda(lambda: TransformerLM(tiny_lm())).eval()
        prompt = torch.randint(0, 50, (2, 5), device=CUDA)
        generate(model, prompt, 40, temperature=0.8, top_k=5)
        assert reads.reads == []
        generate(model, prompt, 40, temperature=0.8, top_k=5, stop_token=3)
    checks = -(-40 // STOP_CHECK_EVERY)  # every STOP_CHECK_EVERY tokens and at the end
    assert len(reads.reads) == checks, reads.reads


@pytest.mark.parametrize("kind", [k for k in HEAD_KINDS if "block routed" not in k])
def test_attention_weights_for_analysis_stay_on_the_device(kind):
    """``analyze`` asks every head for its weights; they come back on the model's device with no CPU tensor
    mixed in (the statistics are then computed on the host)."""
    with use_backend("chunked"), fake_cuda(count_reads=True):
        layer = on_cuda(lambda: MultiHeadAttention(64, AttentionConfig(num_heads=4).replace(**HEAD_KINDS[kind]))).eval()
        causal = HEAD_KINDS[kind].get("causal", False)
        mask = None if causal else to_device(torch.arange(201)[None] >= torch.tensor([[201], [150]]), CUDA)
        result = layer(torch.randn(2, 201, 64, device=CUDA), mask, return_weights=True)
        assert result.weights and all(w.weights.device == CUDA for w in result.weights)


# --- whole-graph capture: the forwards hold nothing that makes torch.compile break its graph --------------------


def _captured_whole(fn, *args):
    """Run ``fn(*args)`` through ``torch.compile(fullgraph=True)`` with the flex backend (the GPUs' path);
    the eager backend keeps it to Dynamo's capture, without generating code. Inference mode: PyTorch's CPU
    FlexAttention has no backward."""
    torch._dynamo.reset()  # each check compiles afresh (one code object per test would hit the recompile limit)
    with use_backend("flex"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.compile(fn, fullgraph=True, backend="eager")(*args)


@pytest.mark.parametrize("kind", list(HEAD_KINDS))
def test_every_head_kind_is_captured_whole_by_torch_compile(kind):
    layer = MultiHeadAttention(64, AttentionConfig(num_heads=4).replace(**HEAD_KINDS[kind])).eval()
    mask = None if HEAD_KINDS[kind].get("causal") else torch.arange(201)[None] >= torch.tensor([[201], [150]])
    assert _captured_whole(lambda x: layer(x, mask).out, torch.randn(2, 201, 64)).shape == (2, 201, 64)


@pytest.mark.parametrize("name", list(CTC_MODELS))
def test_ctc_training_forward_is_captured_whole_by_torch_compile(name):
    model = Wav2Vec2ForCTC(tiny(vocab_size=10, mask_prob=0.3, **CTC_MODELS[name])).train()
    lengths = torch.tensor([16000, 12000])
    draws = model.draw_training(lengths, 16000, generators_for([1, 2]))
    logits = _captured_whole(lambda w: model.training_forward(w, lengths, draws=draws)[0], torch.randn(2, 16000))
    assert logits.shape == (2, draws.time.shape[1], 10)


@pytest.mark.parametrize("objective", ["contrastive", "bestrq"])
def test_pretraining_losses_are_captured_whole_by_torch_compile(objective):
    model = Wav2Vec2ForPretraining(pretraining_config(objective)).train()
    draws = model.draw_training(None, 16000, generators_for([1, 2]))
    loss = _captured_whole(lambda w: model.pretraining_loss(w, None, draws=draws).loss, torch.randn(2, 16000))
    assert torch.isfinite(loss)


def test_lm_loss_is_captured_whole_by_torch_compile():
    model = TransformerLM(tiny_lm()).train()
    tokens = torch.randint(0, 50, (2, 65))
    assert torch.isfinite(_captured_whole(lambda t: model.loss(t[:, :-1], t[:, 1:])[1], tokens))
