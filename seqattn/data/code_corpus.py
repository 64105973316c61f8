"""A long-range text corpus that every machine running seqattn already has: Python's own standard library.

Source files are long documents in which names recur far apart: a class defined at the top of ``argparse.py``
is used tens of thousands of characters later, a helper's name and argument list are repeated at each call.
That makes them a byte-level language-modelling text with long-range repetition that needs no download.

The split is by module (no module is in two splits) and fixed by name, so the same Python version gives the
same text; :func:`build_code_corpus` writes ``train.txt``, ``valid.txt`` and ``test.txt`` (documents separated
by a form feed) and a ``manifest.json`` with every file's size and SHA-256, so a run records exactly which
text it used (a different Python patch release can change a few files; the manifest shows which).
"""
from __future__ import annotations

import hashlib
import json
import sysconfig
from pathlib import Path

from seqattn.errors import SeqattnError
from seqattn.utils.atomic import atomic_path

SPLITS = {
    "train": ["_pydecimal.py", "turtle.py", "typing.py", "tarfile.py", "doctest.py", "argparse.py", "_pyio.py",
              "pickletools.py", "zipfile.py", "datetime.py", "subprocess.py", "difflib.py", "locale.py", "enum.py",
              "mailbox.py", "ipaddress.py", "pickle.py", "pdb.py", "ast.py", "optparse.py", "dataclasses.py",
              "threading.py", "shutil.py", "configparser.py", "imaplib.py", "ssl.py", "pathlib.py",
              "statistics.py", "smtplib.py", "platform.py", "traceback.py", "os.py", "functools.py",
              "socket.py", "codecs.py", "ftplib.py"],
    "valid": ["inspect.py", "pydoc.py"],
    "test": ["logging/__init__.py", "unittest/mock.py"],
}
DOCUMENT_SEPARATOR = "\f\n"


class CorpusBuildError(SeqattnError, ValueError):
    """The standard library lacks a file of the fixed split."""


def build_code_corpus(out_dir: str | Path, stdlib: str | Path | None = None) -> dict:
    """Write the splits and the manifest into ``out_dir``; returns the manifest."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    missing = [name for names in SPLITS.values() for name in names if not (root / name).is_file()]
    if missing:
        raise CorpusBuildError(f"{root} lacks {', '.join(missing)} (the fixed module list of the code corpus)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"stdlib": str(root), "splits": {}}
    for split, names in SPLITS.items():
        texts, files = [], []
        for name in names:
            data = (root / name).read_bytes()
            texts.append(data.decode("utf-8"))
            files.append({"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        text = DOCUMENT_SEPARATOR.join(texts)
        with atomic_path(out / f"{split}.txt") as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        manifest["splits"][split] = {"characters": len(text), "files": files}
    with atomic_path(out / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
