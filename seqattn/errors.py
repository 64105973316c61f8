"""The one base of every error seqattn reports to a user.

Each module raises its own subclass (``AudioError``, ``DataDirError``, ``ModelDirError``...) with a message
that names the file, line or key at fault; the command-line entry point catches :class:`SeqattnError` alone
and prints that message in one line, with no traceback. Subclasses that describe a bad value also derive
from ``ValueError`` (and training failures from ``RuntimeError``), so library callers may catch either.
This module imports nothing, so every layer (``data`` included, which stands alone) can use it.
"""


class SeqattnError(Exception):
    """An error with a message meant for the user: what is wrong and where (file, line, key or tensor)."""
