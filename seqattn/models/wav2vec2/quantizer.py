"""Gumbel product quantizer of wav2vec 2.0: G groups of V learned code vectors each.

In training a straight-through Gumbel-softmax picks one entry per group (temperature annealed per update);
in eval mode the argmax does. The concatenation of the picked entries is the quantized target.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
                generators: list[torch.Generator] | None = None, reduce: Callable | None = None) -> Quantized:
        """x (B, T, dim) -> :class:`Quantized`.

        ``frame_mask`` (B, T) bool selects frames for the perplexities. In training, ``generators`` (one per
        row) draw the Gumbel noise, and ``reduce`` (a differentiable all-reduce sum) makes the perplexities
        those of the whole distributed batch.
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
            choice = _gumbel_hard(logits.float(), self.temperature, batch, generators).type_as(logits)
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


def _gumbel_hard(logits: torch.Tensor, tau: float, batch: int, generators) -> torch.Tensor:
    """Straight-through Gumbel-softmax over the last dim; noise from per-row generators when given."""
    if generators is None:
        uniform = torch.rand_like(logits)
    else:
        per_row = logits.shape[0] // batch
        uniform = torch.cat([torch.rand((per_row, *logits.shape[1:]), generator=g) for g in generators]).to(logits)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1 - 1e-7)))
    soft = torch.softmax((logits + gumbel) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


def perplexity(probs: torch.Tensor, keep: torch.Tensor | None, reduce: Callable | None = None) -> torch.Tensor:
    """Sum over groups of exp(entropy of the mean distribution). probs (BT, G, V)."""
    if keep is not None:
        probs = probs[keep]
    total = probs.sum(0)  # (G, V)
    count = probs.new_tensor(float(probs.shape[0]))
    if reduce is not None:
        total, count = reduce(total), reduce(count)
    if float(count) == 0:
        return probs.new_zeros(())
    mean = total / count
    # fairseq's form: log(p + 1e-7), not xlogy(p, p), whose gradient is NaN (log 0 + 0/0) for an entry whose
    # mean probability underflows to 0, which happens once the quantizer's logits grow large
    return torch.exp(-torch.sum(mean * torch.log(mean + 1e-7), dim=-1)).sum()
