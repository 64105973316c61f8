"""Gumbel product quantizer of wav2vec 2.0: G groups of V learned code vectors each.

In training a straight-through Gumbel-softmax picks one entry per group (temperature annealed per update);
in eval mode the argmax does. The concatenation of the picked entries is the quantized target.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Quantized:
    x: torch.Tensor  # (B, T, vq_dim) quantized vectors
    targets: torch.Tensor  # (B, T, G) chosen entry per group
    code_perplexity: torch.Tensor  # perplexity of hard choices (how many entries are used)
    prob_perplexity: torch.Tensor  # perplexity of the averaged softmax (what the diversity loss maximises)
    num_vars: int  # G * V


class GumbelQuantizer(nn.Module):
    def __init__(self, dim: int, num_vars: int, groups: int, vq_dim: int, temp: tuple[float, float, float]):
        super().__init__()
        if vq_dim % groups:
            raise ValueError(f"vq_dim {vq_dim} must be divisible by groups {groups}")
        self.num_vars, self.groups = num_vars, groups
        self.codevectors = nn.Parameter(torch.empty(1, groups * num_vars, vq_dim // groups))
        nn.init.uniform_(self.codevectors)
        self.weight_proj = nn.Linear(dim, groups * num_vars)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)
        self.max_temp, self.min_temp, self.temp_decay = temp
        self.temperature = self.max_temp

    def set_num_updates(self, num_updates: int) -> None:
        self.temperature = max(self.max_temp * self.temp_decay**num_updates, self.min_temp)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None,
                generators: list[torch.Generator] | None = None, reduce: Callable | None = None,
                noise: torch.Tensor | None = None) -> Quantized:
        """x (B, T, dim) -> :class:`Quantized`.

        ``frame_mask`` (B, T) bool selects frames for the perplexities. In training the Gumbel noise is
        ``noise`` (B, T, G, V) uniform, drawn on the host by the trainer, or drawn here from ``generators``
        (one per row, on the host, then copied), or from the device's generator; ``reduce`` (a differentiable
        all-reduce sum) makes the perplexities those of the whole distributed batch.
        """
        batch, length, _ = x.shape
        logits = self.weight_proj(x).view(batch * length, self.groups, self.num_vars)  # (BT, G, V)
        targets = logits.argmax(-1)  # (BT, G)
        hard = F.one_hot(targets, self.num_vars).to(logits.dtype)  # (BT, G, V)
        soft = torch.softmax(logits.float(), dim=-1)  # (BT, G, V)
        keep = None if frame_mask is None else frame_mask.reshape(-1)
        code_perplexity = perplexity(hard.float(), keep, reduce)
        prob_perplexity = perplexity(soft, keep, reduce)
        if self.training:
            if noise is not None:
                noise = noise.reshape(logits.shape)  # (BT, G, V)
            choice = _gumbel_hard(logits.float(), self.temperature, batch, generators, noise).type_as(logits)
        else:
            choice = hard
        choice = choice.view(batch * length, -1)  # (BT, G*V)
        vectors = choice[..., None] * self.codevectors  # (BT, G*V, d)
        vectors = vectors.view(batch * length, self.groups, self.num_vars, -1).sum(-2)  # (BT, G, d)
        return Quantized(
            x=vectors.view(batch, length, -1),
            targets=targets.view(batch, length, self.groups),
            code_perplexity=code_perplexity,
            prob_perplexity=prob_perplexity,
            num_vars=self.groups * self.num_vars,
        )


def _gumbel_hard(logits: torch.Tensor, tau: float, batch: int, generators, uniform=None) -> torch.Tensor:
    """Straight-through Gumbel-softmax over the last dim; ``uniform`` noise given, or from per-row generators
    when given."""
    if uniform is not None:
        uniform = uniform.to(logits.dtype)
    elif generators is None:
        uniform = torch.rand_like(logits)
    else:
        per_row = logits.shape[0] // batch
        uniform = torch.cat([torch.rand((per_row, *logits.shape[1:]), generator=g) for g in generators]).to(logits)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1 - 1e-7)))
    soft = torch.softmax((logits + gumbel) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def perplexity(probs: torch.Tensor, keep: torch.Tensor | None, reduce: Callable | None = None) -> torch.Tensor:
    """Sum over groups of exp(entropy of the mean distribution) of the rows ``keep`` (BT,) selects (all when
    None); 0 when no row is selected. probs (BT, G, V). Rows are weighted, not gathered, so no shape depends
    on ``keep``'s contents and nothing is read back from the device."""
    if keep is not None:
        weight = keep.to(probs.dtype)  # (BT,)
        total = (probs * weight[:, None, None]).sum(0)  # (G, V)
        count = weight.sum()
    else:
        total = probs.sum(0)  # (G, V)
        count = probs.new_full((), float(probs.shape[0]))
    if reduce is not None:
        total, count = reduce(total), reduce(count)
    mean = total / count.clamp(min=1)
    # fairseq's form: log(p + 1e-7), not xlogy(p, p), whose gradient is NaN (log 0 + 0/0) for an entry whose
    # mean probability underflows to 0, which happens once the quantizer's logits grow large
    value = torch.exp(-torch.sum(mean * torch.log(mean + 1e-7), dim=-1)).sum()
    return torch.where(count > 0, value, torch.zeros_like(value))
