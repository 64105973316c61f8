"""wav2vec 2.0 models: the encoder backbone, the pretraining model (quantizer + contrastive heads), and CTC.

All follow torchaudio's convention: ``model(waveforms (B, S), lengths (B,) or None) -> (output, out_lengths)``
and ``model.extract_features(waveforms, lengths, num_layers) -> (per-layer outputs, out_lengths)``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .bestrq import RandomProjectionQuantizer
from .components import Encoder, EncoderOutput, FeatureExtractor
from .config import Wav2Vec2Config
from .conv_fbank import ConvFbankFrontEnd
from .fbank import FbankFrontEnd
from .masking import (
    TrainingDraws,
    channel_mask,
    frequency_mask,
    gumbel_noise,
    masked_positions,
    sample_negatives,
    span_mask,
)
from .quantizer import GumbelQuantizer, perplexity

FrontEnd = FeatureExtractor | FbankFrontEnd | ConvFbankFrontEnd  # waveforms (B, S) -> frames (B, C, T)


def build_front_end(config: Wav2Vec2Config) -> FrontEnd:
    """The config's front end: fairseq's raw-waveform CNN, or the log-mel filterbank with its frames stacked
    (no parameters) or conv-subsampled."""
    if config.frontend == "fbank" and config.fbank_subsampling == "conv":
        return ConvFbankFrontEnd(config.fbank_bins, config.fbank_stack, config.fbank_conv_channels)
    if config.frontend == "fbank":
        return FbankFrontEnd(config.fbank_bins, config.fbank_stack)
    return FeatureExtractor(config.conv_layers, config.extractor_mode, config.conv_bias)


@dataclass
class Features:
    x: torch.Tensor  # (B, T, C) front-end features after the feature layer norm
    penalty_sum: torch.Tensor  # sum of squared CNN activations (before the norm): fairseq's features_pen is
    penalty_count: torch.Tensor  # penalty_sum / penalty_count (zero for the fbank front ends)
    padding_mask: torch.Tensor | None  # (B, T) bool, True = padding
    lengths: torch.Tensor | None  # (B,) valid frames
    raw: torch.Tensor | None = None  # (B, T, C) what BEST-RQ's quantizer reads: the front end's frames before the
    # feature norm, or with conv subsampling the stacked log-mel frames at the centre of each frame's field
    frame_counts: list[int] | None = None  # ``lengths`` as host numbers, where the host made them (inference)


class Wav2Vec2Model(nn.Module):
    """Front end (feature CNN or fbank) + feature norm/projection + transformer or Conformer encoder."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        config.validate()
        self.config = config
        self.feature_extractor = build_front_end(config)
        self.feature_norm = nn.LayerNorm(config.feature_dim)
        self.feature_projection = nn.Linear(config.feature_dim, config.embed_dim)
        self.dropout_input = nn.Dropout(config.dropout_input)
        self.mask_emb = nn.Parameter(torch.empty(config.embed_dim).uniform_())
        self.encoder = Encoder(config)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.feature_extractor.output_lengths(lengths)

    def features(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None,
                 mask_generators: list[torch.Generator] | None = None, draws: TrainingDraws | None = None) -> Features:
        """Run the front end (its ``training_frames``: the CNN with fairseq's gradient scaling) and the feature
        layer norm. A front end that masks frequencies before its frames (conv subsampling) gets the bands here:
        ``draws.bins`` (training), or bands drawn from ``mask_generators``; the others are masked in
        :meth:`encode` (:mod:`.front_end`)."""
        front = self.feature_extractor
        bins = None
        if front.masks_before_frames:
            bins = None if draws is None else draws.bins
            if bins is None and mask_generators is not None and self.config.fbank_freq_masks > 0:
                bins = self.frequency_mask(waveforms.shape[0], mask_generators).to(waveforms.device)
        out = front.training_frames(waveforms, lengths, bins, self.config.feature_grad_mult, self.training)
        x = out.frames.transpose(1, 2)  # (B, T, C)
        penalty_sum = x.float().pow(2).sum() if out.learned else x.new_zeros((), dtype=torch.float32)
        penalty_count = x.new_full((), float(x.numel()) if out.learned else 1.0, dtype=torch.float32)
        raw, x = out.targets.transpose(1, 2), self.feature_norm(x)  # raw (B, T, C')
        padding_mask = frame_lengths = None
        if lengths is not None:
            frame_lengths = self.output_lengths(lengths).clamp(max=x.shape[1])
            padding_mask = torch.arange(x.shape[1], device=x.device)[None, :] >= frame_lengths[:, None]
        return Features(x, penalty_sum, penalty_count, padding_mask, frame_lengths, raw)

    def frequency_mask(self, batch: int, generators: list[torch.Generator]) -> torch.Tensor:
        """(B, fbank_bins) bool: the SpecAugment bands to zero, from each row's generator."""
        c = self.config
        return frequency_mask(batch, c.fbank_bins, c.fbank_freq_masks, c.fbank_freq_width, generators)

    def frame_counts(self, lengths: torch.Tensor | None, num_samples: int, batch: int) -> tuple[torch.Tensor, int]:
        """Host arithmetic: (valid frames per row (B,), frames T) of waveforms padded to ``num_samples``
        whose sample counts are the host tensor ``lengths`` (None: every row is whole)."""
        frames = int(self.output_lengths(torch.tensor([num_samples]))[0])
        if lengths is None:
            return torch.full((batch,), frames, dtype=torch.long), frames
        return self.output_lengths(lengths.cpu()).clamp(max=frames), frames

    def draw_masks(self, frame_lengths: torch.Tensor, frames: int, generators: list[torch.Generator], sync_min=None,
                   with_bins: bool = True) -> TrainingDraws:
        """Draw on the host, from one generator per row, the filterbank bands (``with_bins``), time spans and
        channel spans of a batch whose rows have ``frame_lengths`` (host (B,)) of ``frames`` frames;
        ``sync_min`` equalises the masked count across ranks."""
        c = self.config
        batch = frame_lengths.shape[0]
        bins = self.frequency_mask(batch, generators) if with_bins and c.fbank_freq_masks > 0 else None
        time = span_mask(frame_lengths, frames, c.mask_prob, c.mask_length, generators, sync_min=sync_min)
        channels = None
        if c.mask_channel_prob > 0:
            channels = channel_mask(batch, c.embed_dim, c.mask_channel_prob, c.mask_channel_length, generators)
        return TrainingDraws(time=time, channels=channels, bins=bins)

    def apply_mask(self, x, draws: TrainingDraws):
        """Replace the masked time spans by ``mask_emb`` and zero the masked channels. Returns (x, time mask)."""
        c = self.config
        if c.mask_prob > 0:
            x = torch.where(draws.time[..., None], self.mask_emb.to(x.dtype), x)
        if draws.channels is not None:
            x = x.masked_fill(draws.channels[:, None, :], 0.0)
        return x, draws.time

    def encode(self, features: Features, num_layers=None, return_weights=False, mask_generators=None, sync_min=None,
               keep_layer_outputs: bool = True, draws: TrainingDraws | None = None) -> EncoderOutput:
        """Project features and run the encoder; with ``draws`` (training) apply the front end's feature masking
        (:meth:`~.fbank.FbankFrontEnd.mask_features`) and the span masking. The result carries the frame
        ``lengths`` and, when masking, the ``time_mask``.

        ``mask_generators`` is a convenience for host tensors: it draws the masks here, which reads the frame
        lengths back from the features' device; the trainers draw on the host instead (:meth:`draw_masks`)."""
        x = features.x
        front = self.feature_extractor
        if draws is None and mask_generators is not None:
            batch, frames = x.shape[:2]
            lengths = torch.full((batch,), frames) if features.lengths is None else features.lengths.cpu()
            draws = self.draw_masks(lengths, frames, mask_generators, sync_min, with_bins=not front.masks_before_frames)
            draws = draws.to_device(x.device)
        if draws is not None and draws.bins is not None:
            x = front.mask_features(x, draws.bins)  # stacked log-mel frames (the others: unchanged)
        x = self.dropout_input(self.feature_projection(x))
        time_mask = None
        if draws is not None:
            x, time_mask = self.apply_mask(x, draws)
        encoded = self.encoder(x, features.padding_mask, num_layers, return_weights, keep_layer_outputs)
        return replace(encoded, lengths=features.lengths, time_mask=time_mask)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None):
        """(output (B, T, C), frame lengths (B,) or None): torchaudio's ``(x, lengths)`` contract."""
        encoded = self.encode(self.features(waveforms, lengths), keep_layer_outputs=False)
        return encoded.x, encoded.lengths

    def extract_features(self, waveforms, lengths=None, num_layers: int | None = None):
        """Per-layer outputs (list of (B, T, C)): entry i is layer i's output, fairseq's layer_results[i][0]."""
        encoded = self.encode(self.features(waveforms, lengths), num_layers=num_layers)
        return encoded.layer_outputs, encoded.lengths


@dataclass
class PretrainingOutput:
    """One pretraining forward's loss and statistics; every tensor stays on the model's device."""

    loss: torch.Tensor  # per-target mean InfoNCE + weighted diversity and feature penalty (+ attention aux)
    contrastive: torch.Tensor  # summed InfoNCE (BEST-RQ: cross-entropy) over this process's targets
    diversity: torch.Tensor  # (G*V - prob_perplexity) / (G*V)
    feature_penalty: torch.Tensor
    aux: torch.Tensor  # attention auxiliary losses (routing commitment)
    num_targets: torch.Tensor  # this process's masked targets
    correct: torch.Tensor  # of those, how many scored their true quantized vector highest
    code_perplexity: torch.Tensor
    prob_perplexity: torch.Tensor
    temperature: float


class Wav2Vec2ForPretraining(nn.Module):
    """Backbone + the objective's quantizer (which makes the targets) and the heads that predict them.

    One class per objective, the config's ``objective`` choosing: :class:`ContrastivePretraining`
    (wav2vec 2.0) and :class:`BestRQPretraining`. ``Wav2Vec2ForPretraining(config)`` builds that class, so
    code that only has a config (model directories, the trainer) need not know the objectives; both keep
    their parameters under the same names as before (``quantizer.*``, ``project_q.*``, ``final_proj.*``,
    ``bestrq_head.*``)."""

    def __new__(cls, config: Wav2Vec2Config | None = None, *args, **kwargs):
        if cls is Wav2Vec2ForPretraining and config is not None:
            cls = BestRQPretraining if config.objective == "bestrq" else ContrastivePretraining
        return super().__new__(cls)

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.config = config
        self.wav2vec2 = Wav2Vec2Model(config)

    def output_head(self) -> nn.Module:
        """The layer :meth:`forward` puts over the encoder."""
        raise NotImplementedError

    def forward(self, waveforms, lengths=None):
        out, out_lengths = self.wav2vec2(waveforms, lengths)
        return self.output_head()(out), out_lengths

    def extract_features(self, waveforms, lengths=None, num_layers=None):
        return self.wav2vec2.extract_features(waveforms, lengths, num_layers)

    def quantizer_input(self, features: Features) -> torch.Tensor:
        """What the quantizer reads (B, T, C)."""
        raise NotImplementedError

    def projected_targets(self, quantized) -> torch.Tensor | None:
        """The quantized targets in the prediction space, where the objective has one."""
        return None

    def quantize(self, waveforms, lengths=None):
        """Quantized features of every frame: (:class:`Quantized`, :meth:`projected_targets` of them)."""
        features = self.wav2vec2.features(waveforms, lengths)
        frames = None if features.padding_mask is None else ~features.padding_mask
        quantized = self.quantizer(self.quantizer_input(features), frames)
        return quantized, self.projected_targets(quantized)

    def set_num_updates(self, num_updates: int) -> None:
        """Follow the training schedule (the Gumbel temperature); nothing for objectives without one."""

    def draw_training(self, lengths: torch.Tensor | None, num_samples: int, generators: list[torch.Generator],
                      sync_min=None) -> TrainingDraws:
        """Every random draw of a pretraining forward, on the host: the masks of
        :meth:`Wav2Vec2Model.draw_masks` (objectives add their own). ``lengths`` are host sample counts (None:
        every row is ``num_samples`` long)."""
        frame_lengths, frames = self.wav2vec2.frame_counts(lengths, num_samples, len(generators))
        return self.wav2vec2.draw_masks(frame_lengths, frames, generators, sync_min)

    def objective_loss(self, waveforms, lengths, draws: TrainingDraws, *, world_size: int = 1,
                       reduce=None) -> PretrainingOutput:
        raise NotImplementedError

    def pretraining_loss(self, waveforms, lengths, generators: list[torch.Generator] | None = None, *,
                         world_size: int = 1, reduce=None, sync_min=None, draws: TrainingDraws | None = None
                         ) -> PretrainingOutput:
        """The objective's loss (:meth:`objective_loss`).

        ``draws`` come from :meth:`draw_training` on the host (the trainer's way: nothing in the forward then
        waits for the device). ``generators`` instead draws them here, from host ``lengths`` and the
        waveforms' shape, and moves them to the waveforms' device."""
        if draws is None:
            if generators is None:
                raise ValueError("pretraining_loss needs draws or one generator per utterance")
            host_lengths = None if lengths is None else lengths.cpu()
            draws = self.draw_training(host_lengths, waveforms.shape[1], generators, sync_min)
            draws = draws.to_device(waveforms.device)
        return self.objective_loss(waveforms, lengths, draws, world_size=world_size, reduce=reduce)


class BestRQPretraining(Wav2Vec2ForPretraining):
    """BEST-RQ: a frozen random-projection quantizer of the front end's frames and ``bestrq_head``;
    ``forward`` returns the logits over every codebook's entries (B, T, G * V)."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        self.quantizer = RandomProjectionQuantizer(config.stacked_fbank_dim, config.bestrq_codebooks,
                                                   config.bestrq_entries, config.bestrq_dim, config.bestrq_seed)
        self.bestrq_head = nn.Linear(config.embed_dim, config.bestrq_codebooks * config.bestrq_entries)

    def output_head(self) -> nn.Module:
        return self.bestrq_head

    def quantizer_input(self, features: Features) -> torch.Tensor:
        """The front end's frames before the learned feature norm (targets must not move while the model
        learns)."""
        if features.raw is None:
            raise ValueError("BEST-RQ targets need the front end's frames (Features.raw)")
        return features.raw

    def objective_loss(self, waveforms, lengths, draws: TrainingDraws, *, world_size: int = 1,
                    reduce=None) -> PretrainingOutput:
        """Mask spans and predict, at every masked frame, the entry each codebook of the frozen random-projection
        quantizer picks for the unmasked fbank frame (cross-entropy, mean over masked frames and codebooks).

        Under DDP the target count is the global batch's (``reduce``, a differentiable all-reduce sum) and the
        per-rank sum is scaled by ``world_size``, so DDP's gradient average equals one process. Every frame goes
        through the head and the masked ones are weighted in, so no shape depends on the mask's contents.
        """
        reduce = reduce or (lambda t: t)
        features = self.wav2vec2.features(waveforms, lengths, draws=draws)
        encoded = self.wav2vec2.encode(features, draws=draws)
        time_mask = encoded.time_mask  # (B, T)
        frames = None if features.padding_mask is None else ~features.padding_mask
        quantized = self.quantizer(features.raw, frames, reduce=reduce)
        groups, entries = self.quantizer.groups, self.quantizer.num_vars
        batch, length = time_mask.shape
        logits = self.bestrq_head(encoded.x).view(batch, length, groups, entries)  # (B, T, G, V)
        targets = quantized.targets  # (B, T, G)
        per_frame = F.cross_entropy(logits.float().reshape(-1, entries), targets.reshape(-1), reduction="none")
        weight = time_mask[..., None].expand(-1, -1, groups).reshape(-1).to(per_frame.dtype)  # (B*T*G,)
        total = (per_frame * weight).sum()
        num_targets = weight.sum()
        loss = world_size * total / reduce(num_targets.detach()).clamp(min=1) + encoded.aux_loss
        with torch.no_grad():
            correct = ((logits.argmax(-1) == targets).reshape(-1) & (weight > 0)).sum()
            predicted = torch.softmax(logits.float(), dim=-1).view(-1, groups, entries)  # (B*T, G, V)
            prob_perplexity = perplexity(predicted, time_mask.reshape(-1), reduce)
        zero = loss.new_zeros(())
        return PretrainingOutput(
            loss=loss, contrastive=total.detach(), diversity=zero, feature_penalty=zero, aux=encoded.aux_loss.detach(),
            num_targets=num_targets.detach(), correct=correct, code_perplexity=quantized.code_perplexity,
            prob_perplexity=prob_perplexity, temperature=0.0,
        )


class ContrastivePretraining(Wav2Vec2ForPretraining):
    """wav2vec 2.0: a Gumbel quantizer of the normalised features, ``project_q`` and ``final_proj``;
    ``forward`` returns projected states (B, T, F)."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        vq_dim = config.latent_dim or config.final_dim
        self.quantizer = GumbelQuantizer(
            config.feature_dim, config.latent_vars, config.latent_groups, vq_dim, tuple(config.latent_temp)
        )
        self.project_q = nn.Linear(vq_dim, config.final_dim)
        self.final_proj = nn.Linear(config.embed_dim, config.final_dim)
        self.dropout_features = nn.Dropout(config.dropout_features)

    def output_head(self) -> nn.Module:
        return self.final_proj

    def quantizer_input(self, features: Features) -> torch.Tensor:
        return features.x

    def projected_targets(self, quantized) -> torch.Tensor:
        return self.project_q(quantized.x)

    def set_num_updates(self, num_updates: int) -> None:
        self.quantizer.set_num_updates(num_updates)

    def draw_training(self, lengths: torch.Tensor | None, num_samples: int, generators: list[torch.Generator],
                      sync_min=None) -> TrainingDraws:
        """The masks, and each row's masked positions, Gumbel noise and negatives."""
        draws = super().draw_training(lengths, num_samples, generators, sync_min)
        time_index = masked_positions(draws.time)  # (B, M): span_mask gave every row the same count
        per_row = time_index.shape[1]
        gumbel = gumbel_noise(per_row, (self.quantizer.groups, self.quantizer.num_vars), generators)
        negatives = sample_negatives(per_row, self.config.num_negatives, generators)  # (K, B, M)
        return replace(draws, time_index=time_index, gumbel=gumbel, negatives=negatives)

    def objective_loss(self, waveforms, lengths, draws: TrainingDraws, *, world_size: int = 1,
                         reduce=None) -> PretrainingOutput:
        """Mask spans, predict the quantized targets among ``num_negatives`` distractors (InfoNCE).

        ``draws`` hold the masks, each row's masked positions, the Gumbel noise and the negatives. Under DDP,
        ``reduce`` is a differentiable all-reduce sum: the diversity and feature penalties and the target count
        are then those of the whole global batch, and the per-rank contrastive sum is scaled by ``world_size``
        so that DDP's gradient average equals one process on the full batch.
        """
        c = self.config
        reduce = reduce or (lambda t: t)
        features = self.wav2vec2.features(waveforms, lengths, draws=draws)
        unmasked = self.dropout_features(features.x)
        encoded = self.wav2vec2.encode(features, draws=draws)
        x, aux = encoded.x, encoded.aux_loss
        batch, per_row = draws.time_index.shape
        index = draws.time_index[..., None]  # (B, M, 1): each row's masked frames
        targets = unmasked.gather(1, index.expand(-1, -1, unmasked.shape[-1]))  # (B, M, C_conv)
        quantized = self.quantizer(targets, noise=draws.gumbel, reduce=reduce)
        y = self.project_q(quantized.x)  # (B, M, F)
        batch_idx = torch.arange(batch, device=y.device)[None, :, None]
        negatives = y[batch_idx, draws.negatives]  # (K, B, M, F)
        predictions = self.final_proj(x.gather(1, index.expand(-1, -1, x.shape[-1])))  # (B, M, F)
        logits = contrastive_logits(predictions, y, negatives, c.logit_temp)  # (B*M, 1+K)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        contrastive = F.cross_entropy(logits.float(), labels, reduction="sum")
        num_targets = logits.new_full((), float(logits.shape[0]), dtype=torch.float32)  # a fill: no copy, no wait
        penalty = reduce(features.penalty_sum) / reduce(features.penalty_count)
        diversity = (quantized.num_vars - quantized.prob_perplexity) / quantized.num_vars
        loss = world_size * contrastive / reduce(num_targets).clamp(min=1) + c.diversity_weight * diversity
        loss = loss + c.feature_pen_weight * penalty + aux
        with torch.no_grad():
            best = logits.argmax(-1) == 0
            tied = logits.max(-1).values == logits.min(-1).values  # all equal: count as wrong, like fairseq
            correct = (best & ~tied).sum()
        return PretrainingOutput(
            loss=loss, contrastive=contrastive.detach(), diversity=diversity.detach(), feature_penalty=penalty.detach(),
            aux=aux.detach(), num_targets=num_targets, correct=correct,
            code_perplexity=quantized.code_perplexity.detach(), prob_perplexity=quantized.prob_perplexity.detach(),
            temperature=self.quantizer.temperature,
        )


def contrastive_logits(predictions, targets, negatives, temperature: float) -> torch.Tensor:
    """Cosine similarity of each prediction to its target (column 0) and K negatives, over temperature.

    A negative identical to the target is set to -inf. Shapes: (B, M, F), (B, M, F), (K, B, M, F) -> (B*M, 1+K).
    """
    candidates = torch.cat([targets[None], negatives], dim=0)  # (1+K, B, M, F)
    logits = F.cosine_similarity(predictions[None].float(), candidates.float(), dim=-1) / temperature  # (1+K, B, M)
    same = (negatives == targets[None]).all(-1)  # (K, B, M)
    logits = torch.cat([logits[:1], logits[1:].masked_fill(same, float("-inf"))])  # no host read of `same`
    return logits.permute(1, 2, 0).reshape(-1, logits.shape[0])  # (B*M, 1+K)


class Wav2Vec2ForCTC(nn.Module):
    """Backbone + linear head over the vocabulary (blank = 0); ``forward`` returns raw logits (B, T, V)."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError(f"a CTC model needs vocab_size > 0, got {config.vocab_size}")
        self.config = config
        self.wav2vec2 = Wav2Vec2Model(config)
        self.final_dropout = nn.Dropout(config.final_dropout)
        self.head = nn.Linear(config.embed_dim, config.vocab_size)

    def forward(self, waveforms, lengths=None):
        """Raw logits (B, T, V) and frame lengths (None without ``lengths``)."""
        logits, out_lengths, _ = self.training_forward(waveforms, lengths)
        return logits, out_lengths

    def draw_training(self, lengths: torch.Tensor | None, num_samples: int,
                      generators: list[torch.Generator]) -> TrainingDraws:
        """The time, channel and filterbank masks of a fine-tuning forward, drawn on the host from host sample
        ``lengths`` (None: every row is ``num_samples`` long)."""
        frame_lengths, frames = self.wav2vec2.frame_counts(lengths, num_samples, len(generators))
        return self.wav2vec2.draw_masks(frame_lengths, frames, generators)

    def training_forward(self, waveforms, lengths=None, mask_generators=None, freeze_encoder: bool = False,
                         draws: TrainingDraws | None = None):
        """(logits, frame lengths, attention aux loss) for fine-tuning.

        ``draws`` (from :meth:`draw_training`, the trainer's way) or ``mask_generators`` (one per utterance,
        drawn here) apply time and channel masking; ``freeze_encoder`` runs the backbone without gradients so
        only the head learns, as fairseq does for ``freeze_finetune_updates``.
        """
        if draws is None and mask_generators is not None:
            draws = self.draw_training(None if lengths is None else lengths.cpu(), waveforms.shape[1], mask_generators)
            draws = draws.to_device(waveforms.device)
        with torch.no_grad() if freeze_encoder else contextlib.nullcontext():
            features = self.wav2vec2.features(waveforms, lengths, draws=draws)
            encoded = self.wav2vec2.encode(features, draws=draws, keep_layer_outputs=False)
        return self.head(self.final_dropout(encoded.x)), encoded.lengths, encoded.aux_loss

    def extract_features(self, waveforms, lengths=None, num_layers=None):
        return self.wav2vec2.extract_features(waveforms, lengths, num_layers)
