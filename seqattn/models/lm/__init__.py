"""Routing Transformer language models: local + content-routed causal attention, cached generation."""
from . import presets
from .config import LMConfig
from .generate import generate
from .model import LMOutput, TransformerLM

__all__ = ["LMConfig", "LMOutput", "TransformerLM", "generate", "presets"]
