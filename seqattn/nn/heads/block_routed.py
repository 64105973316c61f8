"""Block-routed heads (MoBA): a query attends its own block and the ``top_k`` blocks whose mean key its gate
scores highest (causal: among complete past blocks). Kernel:
:func:`seqattn.nn.block_routing.block_routed_attention`; the cache keeps every key (any complete past block
may be chosen) and the mean key of each complete block."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..block_routing import block_routed_attention
from ..incremental import BlockBuffer, attend_one
from .base import HeadKind, HeadOutput, HeadSection


@dataclass
class BlockRoutedHeads(HeadSection):
    kind: ClassVar[str] = "block_routed"
    exportable: ClassVar[bool] = False  # the gate's top-k picks data-dependent key blocks
    block: int = 64  # positions per block
    top_k: int = 2  # blocks chosen by the gate besides the query's own

    def validate(self, causal: bool) -> None:
        super().validate(causal)
        if self.heads and (self.block < 1 or self.top_k < 0):
            raise ValueError(f"block-routed heads need block >= 1 and top_k >= 0, got {self.block} and "
                             f"{self.top_k}")

    def keys_per_query(self, length: int) -> float:
        return min(self.block * (self.top_k + 1), length)

    def build(self, head_dim: int, causal: bool) -> BlockRoutedKind:
        return BlockRoutedKind(self, causal)


class BlockRoutedKind(nn.Module, HeadKind):
    kind: ClassVar[str] = "block_routed"
    module_name: ClassVar[str] = "block_routed"

    def __init__(self, section: BlockRoutedHeads, causal: bool):
        super().__init__()
        self.block, self.top_k, self.causal = section.block, section.top_k, causal

    def forward(self, q, k, v, key_padding_mask=None, return_weights: bool = False) -> HeadOutput:
        result = block_routed_attention(q, k, v, self.block, self.top_k, causal=self.causal,
                                        key_padding_mask=key_padding_mask, return_weights=return_weights)
        return HeadOutput(result[0], weights=result[1]) if return_weights else HeadOutput(result)

    def prefill(self, q, k, v) -> BlockBuffer:
        return BlockBuffer.from_prompt(k, v, self.block)

    def step(self, q, k, v, buffer: BlockBuffer, position: int):
        keys, values = buffer.visible(q, self.top_k)
        out = attend_one(q, keys, values, torch.ones(keys.shape[2], dtype=torch.bool, device=q.device), k, v)
        buffer.push(k, v)
        return out
