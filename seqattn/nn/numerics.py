"""Numeric conventions shared by the attention kernels."""
from __future__ import annotations

import torch


def masking_value(dtype: torch.dtype) -> float:
    """The score of a masked key: finite (a row with no visible key gives no NaN) and half of the type's
    minimum, so that adding two of them cannot overflow."""
    return torch.finfo(dtype).min / 2
