"""seqattn: multilingual speech and sequence modelling on 1D local and routed attention."""
from seqattn.version import __version__  # noqa: F401  (re-exported)


def load_model(path, device="cpu"):
    """Load any saved seqattn model directory (config.json + model.safetensors), in eval mode."""
    from seqattn.models.io import load_model as _load

    return _load(path, device)
