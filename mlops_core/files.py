"""Writing files whole, and addressing files by what they hold."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write a whole file or nothing: a reader never sees half of it (the rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of its own, so two processes writing the same file never share a partial one.
    descriptor, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                           suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path


def named_files(path: Path) -> list[tuple[str, Path]]:
    """A file as (its name, itself), or every file under a directory by its relative path.

    `__pycache__` is left out: it holds whatever the last Python to import the code compiled,
    so it would make the same code hash (and upload) differently from one machine to another.
    """
    path = Path(path)
    if path.is_dir():
        return [(f.relative_to(path).as_posix(), f) for f in sorted(path.rglob("*"))
                if f.is_file() and "__pycache__" not in f.relative_to(path).parts]
    return [(path.name, path)]


def content_hash(*paths: Path) -> str:
    """A short SHA-256 of files (or directory trees), to address uploads by what they hold."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        for name, file in named_files(path):
            digest.update(name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
