"""Decoder-only Transformer language model on seqattn's attention library (pre-LN, tied embeddings).

``model(tokens (B, N)) -> LMOutput(logits (B, N, V), aux_loss)``; ``model.loss(tokens, targets)`` is the mean
next-token cross-entropy plus the routing commitment loss. :meth:`TransformerLM.step` runs one token against
per-layer caches (see :mod:`seqattn.nn.incremental`) for generation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seqattn.nn import LayerCache, MultiHeadAttention

from .config import LMConfig


@dataclass
class LMOutput:
    logits: torch.Tensor  # (B, N, V)
    aux_loss: torch.Tensor  # routing commitment loss (0 without routing heads)
    weights: list | None = None  # per layer, the attention weights when asked


class Block(nn.Module):
    def __init__(self, config: LMConfig, layer: int):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.dim)
        self.attention = MultiHeadAttention(config.dim, config.attention_for(layer), bias=False)
        self.ffn_norm = nn.LayerNorm(config.dim)
        hidden = config.ffn_mult * config.dim
        self.ffn = nn.Sequential(nn.Linear(config.dim, hidden), nn.GELU(), nn.Linear(hidden, config.dim))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, return_weights: bool = False, cache: LayerCache | None = None):
        attended = self.attention(self.attention_norm(x), return_weights=return_weights, cache=cache)
        x = x + self.dropout(attended.out)
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, attended.aux_loss, attended.weights

    def step(self, x, cache: LayerCache):
        x = x + self.attention.step(self.attention_norm(x), cache)
        return x + self.ffn(self.ffn_norm(x))


class TransformerLM(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.dim)
        self.positions = nn.Embedding(config.max_context, config.dim) if config.positions == "learned" else None
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.dim)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.apply(self._init)
        for block in self.blocks:  # GPT-2: scale the residual projections by depth
            for proj in (block.attention.out_proj, block.ffn[2]):
                nn.init.normal_(proj.weight, std=0.02 / (2 * config.num_layers) ** 0.5)
        if config.tie_embeddings:
            self.output.weight = self.embedding.weight

    @staticmethod
    def _init(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def _embed(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        x = self.embedding(tokens)  # (B, N, E)
        if self.positions is not None:
            end = offset + tokens.shape[1]
            if end > self.config.max_context:
                raise ValueError(f"position {end - 1} is beyond the learned positions (max_context "
                                 f"{self.config.max_context}); use positions=rotary for longer contexts")
            x = x + self.positions(torch.arange(offset, end, device=tokens.device))
        return self.dropout(x)

    def forward(self, tokens: torch.Tensor, return_weights: bool = False,
                caches: list[LayerCache] | None = None) -> LMOutput:
        """tokens (B, N) long -> logits (B, N, V). With ``caches`` (one empty cache per layer), the pass also
        fills them, so that :meth:`step` can continue from the end of ``tokens``."""
        x = self._embed(tokens)
        aux = x.new_zeros(())
        weights = [] if return_weights else None
        for i, block in enumerate(self.blocks):
            x, block_aux, block_weights = block(x, return_weights, None if caches is None else caches[i])
            aux = aux + block_aux
            if return_weights:
                weights.append(block_weights)
        return LMOutput(self.output(self.final_norm(x)), aux, weights)

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean cross-entropy over targets (B, N) in nats, total loss incl. the commitment loss)."""
        out = self(tokens)
        nll = F.cross_entropy(out.logits.float().flatten(0, 1), targets.flatten())
        return nll, nll + out.aux_loss

    def new_caches(self) -> list[LayerCache]:
        return [LayerCache() for _ in self.blocks]

    def step(self, token: torch.Tensor, caches: list[LayerCache]) -> torch.Tensor:
        """Logits (B, V) of the token after ``token`` (B,) given the caches of everything before it."""
        x = self._embed(token[:, None], caches[0].position)  # (B, 1, E)
        for block, cache in zip(self.blocks, caches):
            x = block.step(x, cache)
        return self.output(self.final_norm(x))[:, 0]
