"""CTC fine-tuning of a (pretrained) wav2vec 2.0 encoder.

Run:  seqattn finetune recipes/wav2vec2/finetune_tiny.yaml init=exp/pretrain/checkpoints/update_00000400 \
          data.train='[{path: data/train_hi}]' data.valid='[{path: data/dev_hi}]' run.output_dir=exp/ft

Top to bottom: vocabulary from the training text, checks of every utterance (coverage, label length),
model (pretrained backbone + new head), the tri-stage schedule, then the shared update loop with
validation WER/CER every ``validate_every`` updates and the best checkpoint kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from seqattn.data.augment import AugmentConfig
from seqattn.data.labelled import PaddedBatches, prepare, read_texts
from seqattn.data.pieces import PieceVocabulary
from seqattn.data.sources import DataSource
from seqattn.data.text import CharVocabulary
from seqattn.data.vocabulary import VOCAB_FILE, load_vocabulary
from seqattn.decode.ctc import collapse
from seqattn.models.io import check_model_dir, read_model_config
from seqattn.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForCTC
from seqattn.models.wav2vec2.masking import generators_for
from seqattn.utils.device import module_device
from seqattn.utils.values import check_known_keys, merge_values

from .distributed import DistributedContext
from .loop import (
    OptimConfig,
    RunConfig,
    StepOutput,
    Task,
    TrainingError,
    TrainingRun,
    TrainingState,
    adamw,
    check_sources,
    launch,
)
from .schedule import tri_stage


@dataclass
class FinetuneData:
    train: list[DataSource] = field(default_factory=list)
    valid: list[DataSource] = field(default_factory=list)
    sample_rate: int = 16000
    max_tokens: int = 1_000_000  # padded samples per global batch
    min_sample_size: int = 4000
    max_sample_size: int = 480_000  # longer utterances are reported and skipped
    strip_punctuation: bool = True
    lowercase: bool = False
    common_script: bool = False  # one label set for all Indic scripts (seqattn.data.indic); needs utt2lang
    units: str = "char"  # CTC output units: "char", or "sentencepiece" (a unigram model learnt on the words)
    sentencepiece_size: int = 200
    num_workers: int = 0
    fix_data_dirs: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # waveform perturbation of training utterances
    # the first this-many epochs run their batches from the shortest utterances to the longest (SortaGrad), so
    # that CTC first aligns short, easy utterances; later epochs are shuffled
    shortest_first_epochs: int = 0


@dataclass
class TriStage:
    warmup_ratio: float = 0.1
    hold_ratio: float = 0.4
    init_scale: float = 0.01
    final_scale: float = 0.05


@dataclass
class FinetuneConfig:
    init: str | None = None  # pretrained seqattn model directory; None = random init from `model`
    # A CTC init (a fine-tuned or imported CTC model) keeps its head and tokens.json, so training continues
    # where it stopped; true trains a new head over a vocabulary built from the training text instead.
    new_vocabulary: bool = False
    # Wav2Vec2Config settings, one rule for both starts: the keys given here apply, on the init's config (its
    # masking, dropout or heads change; architecture keys must agree with its weights) or, with init: null, on
    # the defaults. Checked when the config is read.
    model: dict = field(default_factory=dict)
    freeze_cnn: bool = True
    freeze_updates: int = 0  # the transformer stays frozen (head only) for this many updates
    validate_every: int = 100
    data: FinetuneData = field(default_factory=FinetuneData)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-5, max_updates=20000))
    schedule: TriStage = field(default_factory=TriStage)
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="exp/finetune"))


    def __post_init__(self):
        check_known_keys(Wav2Vec2Config, self.model, "model")
        try:
            Wav2Vec2Config.from_dict(self.model)
        except (TypeError, ValueError) as error:
            raise ValueError(f"model: {error}") from None


def init_vocabulary(config: FinetuneConfig) -> CharVocabulary | None:
    """The vocabulary of a CTC ``init`` whose head training continues, or None (a new head is trained)."""
    if config.init is None or config.new_vocabulary:
        return None
    meta = read_model_config(config.init)
    if meta.get("model_type") != "wav2vec2_ctc":
        return None  # a pretraining checkpoint: the head is new by nature
    path = Path(config.init) / VOCAB_FILE
    if not path.is_file():
        raise TrainingError(f"{config.init} is a CTC model without {VOCAB_FILE}, so its head cannot be continued; "
                            "set new_vocabulary=true to train a new head over the training text's vocabulary")
    vocab = load_vocabulary(path)
    if len(vocab) != meta["config"].get("vocab_size"):
        raise TrainingError(f"{path} has {len(vocab)} tokens but the model outputs {meta['config'].get('vocab_size')}")
    return vocab


FRONT_END_KEYS = ("frontend", "fbank_bins", "fbank_stack", "fbank_subsampling", "fbank_conv_channels", "conv_layers",
                  "extractor_mode", "encoder_block")


def check_label_rate(model: Wav2Vec2ForCTC, report, sample_rate: int) -> None:
    """A frame rate too low for the labels is a configuration error, not a data problem: when it rejects half
    of the training utterances or more, stop with an error that names the key setting the frame rate."""
    usable = len(report.items) + report.too_few_frames
    if report.too_few_frames == 0 or report.too_few_frames * 2 < usable:
        return
    key = "fbank_stack" if model.config.frontend == "fbank" else "conv_layers"
    hop = model.wav2vec2.feature_extractor.receptive_field()[1]  # samples between frames
    raise TrainingError(f"model.{key}: frames of {1000 * hop / sample_rate:g} ms leave fewer CTC frames than labels "
                        f"in {report.too_few_frames} of {usable} training utterances (listed in "
                        "rejected_utterances.txt); use a higher frame rate or larger units (data.units: sentencepiece)")


def build_model(config: FinetuneConfig, vocab_size: int, keep_head: bool = False) -> Wav2Vec2ForCTC:
    """A CTC model: the pretrained backbone (``init``) with a new head, the whole CTC ``init`` (``keep_head``),
    or random init."""
    model_config = model_config_for(config, vocab_size)
    if config.freeze_cnn:
        model_config.feature_grad_mult = 0.0
    model = Wav2Vec2ForCTC(model_config)
    if config.init is not None:
        from safetensors.torch import load_file

        state = load_file(str(Path(config.init) / "model.safetensors"))
        if keep_head:
            model.head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
        backbone = {k[len("wav2vec2."):]: v for k, v in state.items() if k.startswith("wav2vec2.")}
        if not backbone:
            raise TrainingError(f"{config.init} holds no wav2vec2 backbone weights")
        # Heads turned into global heads by the model settings keep their projections and get fresh summary
        # queries (initialised as the model's own); anything else missing or left over is an error.
        fresh = {name: value for name, value in model.wav2vec2.state_dict().items()
                 if name.endswith("global_attention.queries") and name not in backbone}
        try:
            model.wav2vec2.load_state_dict({**fresh, **backbone}, strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()
            raise TrainingError(f"the weights of {config.init} do not fit the model that the model settings ask for: "
                                f"{first[1].strip() if len(first) > 1 else first[0]}") from None
    return model


def model_config_for(config: FinetuneConfig, vocab_size: int) -> Wav2Vec2Config:
    """The CTC model's config: ``config.model``'s keys on the init's config, or on the defaults without one."""
    base = {}
    if config.init is not None:
        meta = read_model_config(config.init)
        check_model_dir(Path(config.init), meta)  # the init directory agrees with itself before anything is built
        base = Wav2Vec2Config.from_saved(meta["config"]).to_dict()
        for key in FRONT_END_KEYS:  # weights cannot carry over to another front end or block type
            if key in config.model and config.model[key] != base[key]:
                raise TrainingError(f"model.{key}: {config.init} was pretrained with {key}={base[key]!r}, its "
                                    f"weights cannot serve {key}={config.model[key]!r} (pretrain with it, or "
                                    "fine-tune from scratch with init: null)")
    try:
        model_config = Wav2Vec2Config.from_dict({**merge_values(base, config.model), "vocab_size": vocab_size})
        model_config.validate()
    except (TypeError, ValueError) as error:
        where = f" on {config.init}" if config.init is not None else ""
        raise TrainingError(f"model{where}: {error}") from None
    return model_config


@dataclass
class HostValues:
    """What a fine-tuning batch keeps on the host (the loop moves only tensors and draws to the device):
    CTC's length tensors, which torch's ``ctc_loss`` reads on the host, and the numbers for the log line."""

    frames: torch.Tensor  # (B,) long: CTC frames of each utterance
    label_lengths: torch.Tensor  # (B,) long
    utterances: float  # over every rank of this micro-batch
    labels: int
    audio_s: float


class CTCStep(nn.Module):
    """CTC loss inside ``forward`` (for DDP): summed over utterances, divided by the global count (a host
    number summed over ranks before the forward, so the forward holds no collective)."""

    def __init__(self, model: Wav2Vec2ForCTC, context: DistributedContext):
        super().__init__()
        self.model, self.context = model, context

    def forward(self, waves, lengths, labels, host: HostValues, draws, freeze_encoder: bool):
        logits, _, aux = self.model.training_forward(waves, lengths, freeze_encoder=freeze_encoder, draws=draws)
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, V)
        total = F.ctc_loss(log_probs, labels, host.frames, host.label_lengths, blank=0, reduction="sum",
                           zero_infinity=True)
        return total * self.context.world_size / max(host.utterances, 1.0) + aux, total.detach()


class FinetuneTask(Task):
    def __init__(self, config, model, vocab, train_items, valid_items, ctx, monitor):
        self.config, self.model, self.vocab, self.ctx, self.monitor = config, model, vocab, ctx, monitor
        self.train_items, self.valid_items = train_items, valid_items
        step = CTCStep(model, ctx)
        self.step_module = DistributedDataParallel(step, device_ids=ctx.device_ids,
                                                   find_unused_parameters=True) if ctx.enabled else step
        self.frozen = True

    def epoch_dataset(self, epoch: int):
        data = self.config.data
        return PaddedBatches(self.train_items, epoch, self.config.run.seed, data.max_tokens, data.sample_rate,
                             self.model.config.normalize_waveform, self.ctx.rank, self.ctx.world_size,
                             augment=data.augment, shortest_first=epoch < data.shortest_first_epochs)

    def is_empty(self, batch) -> bool:
        return batch["waves"].shape[0] == 0

    def no_sync(self):
        return self.step_module.no_sync()

    def before_update(self, step: int) -> None:
        self.frozen = step < self.config.freeze_updates

    def host_prepare(self, batch):
        """Masks drawn from each utterance's generator, CTC frame counts and the log numbers, all on the host."""
        waves, lengths = batch["waves"], batch["lengths"]
        frames, _ = self.model.wav2vec2.frame_counts(lengths, waves.shape[1], waves.shape[0])
        host = HostValues(frames=frames, label_lengths=batch["label_lengths"],
                          utterances=self.ctx.sum_floats([float(waves.shape[0])])[0],
                          labels=int(batch["label_lengths"].sum()),
                          audio_s=float(lengths.sum()) / self.config.data.sample_rate)
        draws = self.model.draw_training(lengths, waves.shape[1], generators_for(batch["keys"]))
        return {**batch, "host": host, "draws": draws}

    def forward(self, batch) -> StepOutput:
        host = batch["host"]
        loss, total = self.step_module(batch["waves"], batch["lengths"], batch["labels"], host, batch["draws"],
                                       self.frozen)
        statistics = {"loss": total, "utterances": batch["waves"].shape[0], "labels": host.labels,
                      "audio_s": host.audio_s}
        return StepOutput(loss, statistics, {"loss": total / max(batch["waves"].shape[0], 1)})

    def log_values(self, statistics: dict, micro_batches: float, elapsed: float) -> dict:
        return {"loss_per_utterance": statistics["loss"] / max(statistics["utterances"], 1),
                "loss_per_label": statistics["loss"] / max(statistics["labels"], 1),
                "audio_s_per_s": statistics["audio_s"] / elapsed}

    def validate(self, step: int) -> float | None:
        if not self.valid_items:
            return None
        scores = evaluate(self.model, self.valid_items, self.vocab, self.config.data, self.ctx)
        self.monitor.scalars(step, scores, prefix="valid")
        self.model.train()
        return scores["wer"]


def evaluate(model: Wav2Vec2ForCTC, items, vocab: CharVocabulary, data: FinetuneData, ctx: DistributedContext) -> dict:
    """Greedy WER/CER (%) over ``items`` (each rank scores its share; counts are summed), on the model's device."""
    model.eval()
    device = module_device(model)
    dataset = PaddedBatches(items, 0, 0, data.max_tokens, data.sample_rate, model.config.normalize_waveform,
                            ctx.rank, ctx.world_size, shuffle=False)
    refs, hyps = [], []
    with torch.no_grad():
        for index in range(len(dataset)):
            batch = dataset[index]
            if batch["waves"].shape[0] == 0:
                continue
            waves, lengths = batch["waves"], batch["lengths"]
            frames, _ = model.wav2vec2.frame_counts(lengths, waves.shape[1], waves.shape[0])  # host numbers
            logits, _ = model(waves.to(device, non_blocking=True), lengths.to(device, non_blocking=True))
            best = logits.argmax(-1).cpu()  # (B, T): the batch's one device read
            for row, (text, language) in enumerate(zip(batch["texts"], batch["languages"])):
                hyps.append(vocab.decode(collapse(best[row, : int(frames[row])].tolist()).tokens, language))
                refs.append(text)
    words = jiwer.process_words(refs, hyps) if refs else None
    chars = jiwer.process_characters(refs, hyps) if refs else None
    w_err = (words.substitutions + words.deletions + words.insertions) if words else 0
    w_ref = (words.substitutions + words.deletions + words.hits) if words else 0
    c_err = (chars.substitutions + chars.deletions + chars.insertions) if chars else 0
    c_ref = (chars.substitutions + chars.deletions + chars.hits) if chars else 0
    w_err, w_ref, c_err, c_ref = ctx.sum_floats([w_err, w_ref, c_err, c_ref])
    return {"wer": 100 * w_err / max(w_ref, 1), "cer": 100 * c_err / max(c_ref, 1)}


def train(config: FinetuneConfig, command: str = "seqattn finetune") -> Path:
    """Run (or resume) fine-tuning; returns the best checkpoint (by validation WER) or the last one."""
    try:
        config.data.augment.validate()
    except ValueError as error:
        raise TrainingError(str(error)) from None
    check_sources([s.path for s in config.data.train], "labelled")
    check_sources([s.path for s in config.data.valid] or [config.data.train[0].path], "validation")
    return launch(_train, config, command)


def _train(config: FinetuneConfig, ctx: DistributedContext, command: str) -> Path:
    data, optim = config.data, config.optim
    out = Path(config.run.output_dir)
    train_sources = [(s.location, s.language) for s in data.train]
    valid_sources = [(s.location, s.language) for s in data.valid]
    texts = read_texts(train_sources, data.fix_data_dirs)
    if data.common_script and any(language is None for _, language in texts):
        raise TrainingError("data.common_script needs every training utterance's language (utt2lang in the data "
                            "dirs, or a language on each data source)")
    if data.units not in ("char", "sentencepiece"):
        raise TrainingError(f"data.units must be 'char' or 'sentencepiece', got {data.units!r}")
    texts_only, languages = [t for t, _ in texts], [language for _, language in texts]
    continued = init_vocabulary(config)
    if continued is not None:
        vocab = continued
    elif data.units == "sentencepiece":
        vocab = PieceVocabulary.build(texts_only, data.strip_punctuation, data.lowercase, languages=languages,
                                      common_script=data.common_script, size=data.sentencepiece_size)
    else:
        vocab = CharVocabulary.build(texts_only, data.strip_punctuation, data.lowercase, languages=languages,
                                     common_script=data.common_script)
    torch.manual_seed(config.run.seed)
    model = build_model(config, len(vocab), keep_head=continued is not None)
    frames_of = lambda samples: int(model.wav2vec2.output_lengths(torch.tensor([samples]))[0])
    train_report = prepare(train_sources, vocab, data.sample_rate, data.min_sample_size, data.max_sample_size,
                           frames_of, data.fix_data_dirs)
    valid_report = prepare(valid_sources, vocab, data.sample_rate, data.min_sample_size, data.max_sample_size,
                           frames_of, data.fix_data_dirs)
    rejected = [f"train {r}" for r in train_report.rejected] + [f"valid {r}" for r in valid_report.rejected]
    if rejected and ctx.is_main:  # before the checks below, whose errors point at it
        out.mkdir(parents=True, exist_ok=True)
        (out / "rejected_utterances.txt").write_text("\n".join(rejected) + "\n", encoding="utf-8")
    check_label_rate(model, train_report, data.sample_rate)
    if not train_report.items:
        raise TrainingError(f"no usable training utterances (see {out / 'rejected_utterances.txt'})")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(params, optim)
    s = config.schedule
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: tri_stage(step, optim.max_updates, s.warmup_ratio, s.hold_ratio, s.init_scale,
                                          s.final_scale))
    training = TrainingRun("finetune", config, ctx, TrainingState(model, optimizer, scheduler), command=command,
                           extra_files={VOCAB_FILE: out / VOCAB_FILE})
    monitor, manager = training.monitor, training.manager
    if ctx.is_main:
        vocab.save(out / VOCAB_FILE)
        if continued is not None:
            monitor.message(f"continuing the CTC head and vocabulary of {config.init} (new_vocabulary=true would "
                            "train a new head); training characters outside it are rejected")
        monitor.message(f"vocabulary of {len(vocab)} tokens; {len(train_report.items)} training and "
                        f"{len(valid_report.items)} validation utterances; {len(rejected)} rejected "
                        "(see rejected_utterances.txt)")
        if not valid_report.items:
            monitor.message(_no_validation_warning(valid_sources, valid_report))
    task = FinetuneTask(config, model, vocab, train_report.items, valid_report.items, ctx, monitor)
    training.train(task, num_workers=data.num_workers, validate_every=config.validate_every)
    if not valid_report.items and ctx.is_main and manager.latest() is not None:
        manager.mark_best(manager.latest())
    ctx.barrier()
    return training.result()


def _no_validation_warning(valid_sources, valid_report) -> str:
    """Why no model can be chosen by validation, and what is kept instead."""
    if not valid_sources:
        why = "data.valid is empty"
    else:
        why = f"all {len(valid_report.rejected)} were rejected, see rejected_utterances.txt"
    return (f"warning: no validation utterances ({why}); checkpoints/BEST will name the final model, not one "
            "chosen by validation WER")
