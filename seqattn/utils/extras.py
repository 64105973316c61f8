"""Optional dependencies: what needs them, and the one-line error that names the extra to install.

The core (attention, models, training, transcription) needs torch, torchaudio and a few small packages; the
heavier ones come with extras: ``train`` (tensorboard logs), ``analysis`` (matplotlib, scipy, scikit-learn
for ``seqattn analyze`` and ``convert localize``), ``decode`` (flashlight-text beam search). ``make test`` and
``make demo`` install them all from the lock.
"""
from __future__ import annotations

import importlib

from seqattn.errors import SeqattnError

ANALYSIS_MODULES = ("matplotlib", "scipy", "sklearn")


class MissingExtraError(SeqattnError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, purpose: str, hint: str = ""):
    """Import ``module`` or raise MissingExtraError: '<purpose> needs <package>: pip install "seqattn[<extra>]"'."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"sklearn": "scikit-learn", "torch.utils.tensorboard": "tensorboard"}.get(module, module)
        raise MissingExtraError(f"{purpose} needs {package}, which is not installed: pip install "
                                f"\"seqattn[{extra}]\"{hint}") from None


def require_analysis(purpose: str) -> None:
    """The analysis extra's packages, checked before any analysis starts."""
    for module in ANALYSIS_MODULES:
        require(module, "analysis", purpose)
