"""Head kinds: one module per kind, each a config section plus the module that runs it (:mod:`.base`)."""
from .base import CacheUnsupported, HeadKind, HeadOutput, HeadSection
from .block_routed import BlockRoutedHeads
from .dilated import DilatedHeads
from .full import FullHeads
from .global_tokens import GlobalTokenHeads
from .local import LocalHeads
from .pooled import PooledHeads
from .routing import RoutingHeads
from .shifted_window import ShiftedWindowHeads

__all__ = [
    "BlockRoutedHeads",
    "CacheUnsupported",
    "DilatedHeads",
    "FullHeads",
    "GlobalTokenHeads",
    "HeadKind",
    "HeadOutput",
    "HeadSection",
    "LocalHeads",
    "PooledHeads",
    "RoutingHeads",
    "ShiftedWindowHeads",
]
