"""Sampling text from a :class:`TransformerLM`, with or without the generation cache.

Cached: the prompt runs once through the model (filling every layer's cache), then each new token costs
one :meth:`TransformerLM.step`, whose local/routed attention memory is bounded by the windows. Uncached:
each new token reruns the whole sequence. In eval mode both give the same logits, hence the same tokens.
"""
from __future__ import annotations

import torch

from .model import TransformerLM

STOP_CHECK_EVERY = 16  # tokens between host checks for the stop token (each check waits for the device)


def pick(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator | None) -> torch.Tensor:
    """Next tokens (B,) from logits (B, V): argmax at temperature 0, else sampling (optionally top-k)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model: TransformerLM, prompt: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int = 0, seed: int | None = None, use_cache: bool = True, stop_token: int | None = None
             ) -> torch.Tensor:
    """prompt (B, P) long, P >= 1 -> (B, P + new) long. The model must be in eval mode.

    With ``stop_token``, generation ends after the first step at which every row drew it. The host looks
    every ``STOP_CHECK_EVERY`` tokens (not after each one, which would wait for the device at every token)
    and cuts the tokens drawn after that step, so the result is the same as checking every token."""
    if model.training:
        raise ValueError("generate needs model.eval(): routing centroids must be frozen for the cache to be exact")
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be (batch, length >= 1), got shape {tuple(prompt.shape)}")
    generator = None if seed is None else torch.Generator(device=prompt.device).manual_seed(seed)
    tokens = prompt
    caches = model.new_caches() if use_cache else None
    logits = model(tokens, caches=caches).logits[:, -1]  # (B, V)
    start = prompt.shape[1]
    for step in range(max_new_tokens):
        chosen = pick(logits, temperature, top_k, generator)  # (B,)
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
        last = step + 1 == max_new_tokens
        if stop_token is not None and (last or (step + 1) % STOP_CHECK_EVERY == 0):
            stopped = (tokens[:, start:] == stop_token).all(0)  # (steps,): every row drew it at this step
            if bool(stopped.any()):  # the check's one read; a second only to find where
                return tokens[:, : start + int(stopped.int().argmax()) + 1]
        if last:
            break
        logits = model.step(chosen, caches) if use_cache else model(tokens).logits[:, -1]
    return tokens
