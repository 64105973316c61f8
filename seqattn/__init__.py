"""seqattn: multilingual speech and sequence modelling on 1D local and routed attention."""
__version__ = "0.1.0"


def load_model(path, device="cpu"):
    """Load any saved seqattn model directory (config.json + model.safetensors), in eval mode."""
    from seqattn.models.io import load_model as _load

    return _load(path, device)
