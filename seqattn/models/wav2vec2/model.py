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
from .masking import channel_mask, frequency_mask, sample_negatives, span_mask
from .quantizer import GumbelQuantizer, perplexity


class _GradMultiply(torch.autograd.Function):
    """Identity forward; scales the gradient (fairseq's feature_grad_mult)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


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
                 mask_generators: list[torch.Generator] | None = None) -> Features:
        """Run the front end (the CNN with fairseq's gradient scaling) and the feature layer norm.

        ``mask_generators`` (training) draw the SpecAugment frequency masks of a conv-subsampled filterbank,
        which apply before its convolutions; the other front ends are masked in :meth:`encode`."""
        mult = self.config.feature_grad_mult
        learned = self.config.frontend == "cnn"
        targets = None
        if isinstance(self.feature_extractor, ConvFbankFrontEnd):  # learned, but no gradient scaling or penalty
            bins = None
            if mask_generators is not None and self.config.fbank_freq_masks > 0:
                bins = self.frequency_mask(waveforms.shape[0], mask_generators)
            x, targets = self.feature_extractor.frames_and_targets(waveforms, lengths, bins)
            targets = targets.transpose(1, 2)  # (B, T, bins * factor)
        elif not learned:
            x = self.feature_extractor(waveforms, lengths)  # nothing to learn: no gradient scaling, no penalty
        elif mult > 0 or not self.training:
            x = self.feature_extractor(waveforms)
            if self.training and mult != 1.0:
                x = _GradMultiply.apply(x, mult)
        else:
            with torch.no_grad():
                x = self.feature_extractor(waveforms)
        x = x.transpose(1, 2)  # (B, T, C)
        penalty_sum = x.float().pow(2).sum() if learned else x.new_zeros((), dtype=torch.float32)
        penalty_count = torch.tensor(float(x.numel()) if learned else 1.0, device=x.device)
        raw, x = (x if targets is None else targets), self.feature_norm(x)
        padding_mask = frame_lengths = None
        if lengths is not None:
            frame_lengths = self.output_lengths(lengths).clamp(max=x.shape[1])
            padding_mask = torch.arange(x.shape[1], device=x.device)[None, :] >= frame_lengths[:, None]
        return Features(x, penalty_sum, penalty_count, padding_mask, frame_lengths, raw)

    def frequency_mask(self, batch: int, generators: list[torch.Generator]) -> torch.Tensor:
        """(B, fbank_bins) bool: the SpecAugment bands to zero, from each row's generator."""
        c = self.config
        return frequency_mask(batch, c.fbank_bins, c.fbank_freq_masks, c.fbank_freq_width, generators)

    def apply_mask(self, x, padding_mask, generators: list[torch.Generator], sync_min=None):
        """Replace time spans by ``mask_emb`` and zero channel spans. Returns (x, time mask (B, T)).

        ``generators`` holds one generator per row; ``sync_min`` equalises the masked count across ranks.
        """
        c = self.config
        batch, length, dim = x.shape
        lengths = torch.full((batch,), length) if padding_mask is None else (~padding_mask).sum(-1).cpu()
        time_mask = span_mask(lengths, length, c.mask_prob, c.mask_length, generators, sync_min=sync_min).to(x.device)
        if c.mask_prob > 0:
            x = torch.where(time_mask[..., None], self.mask_emb.to(x.dtype), x)
        if c.mask_channel_prob > 0:
            channels = channel_mask(batch, dim, c.mask_channel_prob, c.mask_channel_length, generators).to(x.device)
            x = x.masked_fill(channels[:, None, :], 0.0)
        return x, time_mask

    def encode(self, features: Features, num_layers=None, return_weights=False, mask_generators=None, sync_min=None,
               keep_layer_outputs: bool = True) -> EncoderOutput:
        """Project features and run the encoder; with ``mask_generators`` (training) apply the stacked fbank's
        frequency masking and span masking. The result carries the frame ``lengths`` and, when masking, the
        ``time_mask``. (A conv-subsampled fbank was frequency-masked in :meth:`features`, before its convolutions,
        from the same generators, so every row draws its frequency bands before its spans in both layouts.)"""
        x = features.x
        c = self.config
        stacked = c.fbank_subsampling == "stack"
        if mask_generators is not None and c.fbank_freq_masks > 0 and stacked:
            bins = self.frequency_mask(x.shape[0], mask_generators)
            x = x.masked_fill(bins.repeat(1, c.fbank_stack)[:, None, :].to(x.device), 0.0)  # (B, 1, stack * bins)
        x = self.dropout_input(self.feature_projection(x))
        time_mask = None
        if mask_generators is not None:
            x, time_mask = self.apply_mask(x, features.padding_mask, mask_generators, sync_min)
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
    loss: torch.Tensor  # per-target mean InfoNCE + weighted diversity and feature penalty (+ attention aux)
    contrastive: torch.Tensor  # summed InfoNCE (BEST-RQ: cross-entropy) over this process's targets
    diversity: torch.Tensor  # (G*V - prob_perplexity) / (G*V)
    feature_penalty: torch.Tensor
    aux: torch.Tensor  # attention auxiliary losses (routing commitment)
    num_targets: int  # this process's masked targets
    correct: int  # of those, how many scored their true quantized vector highest
    code_perplexity: torch.Tensor
    prob_perplexity: torch.Tensor
    temperature: float


class Wav2Vec2ForPretraining(nn.Module):
    """Backbone + a quantizer that makes the targets + the heads that predict them.

    ``objective: contrastive`` (wav2vec 2.0): Gumbel quantizer, ``project_q`` and ``final_proj``; ``forward``
    returns projected states (B, T, F). ``objective: bestrq``: a frozen random-projection quantizer and
    ``bestrq_head``; ``forward`` returns the logits over every codebook's entries (B, T, G * V).
    """

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        self.config = config
        self.wav2vec2 = Wav2Vec2Model(config)
        if config.objective == "bestrq":
            self.quantizer = RandomProjectionQuantizer(config.stacked_fbank_dim, config.bestrq_codebooks,
                                                       config.bestrq_entries, config.bestrq_dim, config.bestrq_seed)
            self.bestrq_head = nn.Linear(config.embed_dim, config.bestrq_codebooks * config.bestrq_entries)
            return
        vq_dim = config.latent_dim or config.final_dim
        self.quantizer = GumbelQuantizer(
            config.feature_dim, config.latent_vars, config.latent_groups, vq_dim, tuple(config.latent_temp)
        )
        self.project_q = nn.Linear(vq_dim, config.final_dim)
        self.final_proj = nn.Linear(config.embed_dim, config.final_dim)
        self.dropout_features = nn.Dropout(config.dropout_features)

    def forward(self, waveforms, lengths=None):
        out, out_lengths = self.wav2vec2(waveforms, lengths)
        head = self.bestrq_head if self.config.objective == "bestrq" else self.final_proj
        return head(out), out_lengths

    def extract_features(self, waveforms, lengths=None, num_layers=None):
        return self.wav2vec2.extract_features(waveforms, lengths, num_layers)

    def quantizer_input(self, features: Features) -> torch.Tensor:
        """What the quantizer reads (B, T, C): the normalised features (contrastive), or the front end's frames
        before the learned feature norm (BEST-RQ, whose targets must not move while the model learns)."""
        if self.config.objective == "bestrq":
            if features.raw is None:
                raise ValueError("BEST-RQ targets need the front end's frames (Features.raw)")
            return features.raw
        return features.x

    def quantize(self, waveforms, lengths=None):
        """Quantized features of every frame: (:class:`Quantized`, project_q(quantized.x) or None for BEST-RQ)."""
        features = self.wav2vec2.features(waveforms, lengths)
        frames = None if features.padding_mask is None else ~features.padding_mask
        quantized = self.quantizer(self.quantizer_input(features), frames)
        return quantized, (None if self.config.objective == "bestrq" else self.project_q(quantized.x))

    def set_num_updates(self, num_updates: int) -> None:
        if self.config.objective == "contrastive":
            self.quantizer.set_num_updates(num_updates)

    def pretraining_loss(self, waveforms, lengths, generators: list[torch.Generator], *, world_size: int = 1,
                         reduce=None, sync_min=None) -> PretrainingOutput:
        """The configured objective's loss (see :meth:`contrastive_loss` and :meth:`bestrq_loss`)."""
        loss = self.bestrq_loss if self.config.objective == "bestrq" else self.contrastive_loss
        return loss(waveforms, lengths, generators, world_size=world_size, reduce=reduce, sync_min=sync_min)

    def bestrq_loss(self, waveforms, lengths, generators: list[torch.Generator], *, world_size: int = 1,
                    reduce=None, sync_min=None) -> PretrainingOutput:
        """Mask spans and predict, at every masked frame, the entry each codebook of the frozen random-projection
        quantizer picks for the unmasked fbank frame (cross-entropy, mean over masked frames and codebooks).

        Arguments as for :meth:`contrastive_loss`; under DDP the target count is the global batch's and the
        per-rank sum is scaled by ``world_size``, so DDP's gradient average equals one process.
        """
        reduce = reduce or (lambda t: t)
        features = self.wav2vec2.features(waveforms, lengths, generators)
        encoded = self.wav2vec2.encode(features, mask_generators=generators, sync_min=sync_min)
        time_mask = encoded.time_mask  # (B, T)
        frames = None if features.padding_mask is None else ~features.padding_mask
        quantized = self.quantizer(features.raw, frames, reduce=reduce)
        groups, entries = self.quantizer.groups, self.quantizer.num_vars
        logits = self.bestrq_head(encoded.x[time_mask]).view(-1, groups, entries)  # (M, G, V)
        targets = quantized.targets[time_mask]  # (M, G)
        total = F.cross_entropy(logits.float().reshape(-1, entries), targets.reshape(-1), reduction="sum")
        num_targets = int(reduce(torch.tensor(float(targets.numel()), device=logits.device)).item())
        loss = world_size * total / max(num_targets, 1) + encoded.aux_loss
        with torch.no_grad():
            correct = int((logits.argmax(-1) == targets).sum())
            predicted = torch.softmax(logits.float(), dim=-1)  # (M, G, V)
            prob_perplexity = perplexity(predicted, None, reduce)
        zero = loss.new_zeros(())
        return PretrainingOutput(
            loss=loss, contrastive=total.detach(), diversity=zero, feature_penalty=zero, aux=encoded.aux_loss.detach(),
            num_targets=targets.numel(), correct=correct, code_perplexity=quantized.code_perplexity,
            prob_perplexity=prob_perplexity, temperature=0.0,
        )

    def contrastive_loss(self, waveforms, lengths, generators: list[torch.Generator], *, world_size: int = 1,
                         reduce=None, sync_min=None) -> PretrainingOutput:
        """Mask spans, predict the quantized targets among ``num_negatives`` distractors (InfoNCE).

        ``generators`` (one per utterance) draw masks, negatives and Gumbel noise. Under DDP, ``reduce`` is a
        differentiable all-reduce sum and ``sync_min`` an all-reduce min: the diversity and feature penalties
        and the target count are then those of the whole global batch, and the per-rank contrastive sum is
        scaled by ``world_size`` so that DDP's gradient average equals one process on the full batch.
        """
        c = self.config
        reduce = reduce or (lambda t: t)
        features = self.wav2vec2.features(waveforms, lengths, generators)
        unmasked = self.dropout_features(features.x)
        encoded = self.wav2vec2.encode(features, mask_generators=generators, sync_min=sync_min)
        x, time_mask, aux = encoded.x, encoded.time_mask, encoded.aux_loss
        batch = x.shape[0]
        per_row = int(time_mask.sum(-1).min()) if batch else 0
        targets = unmasked[time_mask].view(batch, per_row, -1)  # (B, M, C_conv)
        quantized = self.quantizer(targets, generators=generators, reduce=reduce)
        y = self.project_q(quantized.x)  # (B, M, F)
        negative_idx = sample_negatives(per_row, c.num_negatives, generators).to(y.device)  # (K, B, M)
        batch_idx = torch.arange(batch, device=y.device)[None, :, None]
        negatives = y[batch_idx, negative_idx]  # (K, B, M, F)
        predictions = self.final_proj(x[time_mask].view(batch, per_row, -1))  # (B, M, F)
        logits = contrastive_logits(predictions, y, negatives, c.logit_temp)  # (B*M, 1+K)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        contrastive = F.cross_entropy(logits.float(), labels, reduction="sum")
        num_targets = int(reduce(torch.tensor(float(logits.shape[0]))).item())
        penalty = reduce(features.penalty_sum) / reduce(features.penalty_count)
        diversity = (quantized.num_vars - quantized.prob_perplexity) / quantized.num_vars
        loss = world_size * contrastive / max(num_targets, 1) + c.diversity_weight * diversity
        loss = loss + c.feature_pen_weight * penalty + aux
        with torch.no_grad():
            best = logits.argmax(-1) == 0
            tied = logits.max(-1).values == logits.min(-1).values  # all equal: count as wrong, like fairseq
            correct = int((best & ~tied).sum())
        return PretrainingOutput(
            loss=loss, contrastive=contrastive.detach(), diversity=diversity.detach(), feature_penalty=penalty.detach(),
            aux=aux.detach(), num_targets=logits.shape[0], correct=correct,
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
    if bool(same.any()):
        logits[1:][same] = float("-inf")
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

    def training_forward(self, waveforms, lengths=None, mask_generators=None, freeze_encoder: bool = False):
        """(logits, frame lengths, attention aux loss) for fine-tuning.

        ``mask_generators`` (one per utterance) apply time and channel masking; ``freeze_encoder`` runs the
        backbone without gradients so only the head learns, as fairseq does for ``freeze_finetune_updates``.
        """
        with torch.no_grad() if freeze_encoder else contextlib.nullcontext():
            features = self.wav2vec2.features(waveforms, lengths, mask_generators)
            encoded = self.wav2vec2.encode(features, mask_generators=mask_generators, keep_layer_outputs=False)
        return self.head(self.final_dropout(encoded.x)), encoded.lengths, encoded.aux_loss

    def extract_features(self, waveforms, lengths=None, num_layers=None):
        return self.wav2vec2.extract_features(waveforms, lengths, num_layers)
