"""Atomic file writes: write a temporary file in the target's folder, then ``os.replace`` it.

A reader never sees a half-written file, and an interrupted write leaves the old file (or
none) behind, never a truncated one.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
>>> write_text(p, "one line\\n").read_text()
'one line\\n'
>>> with atomic_path(p) as tmp:
...     _ = tmp.write_text("replaced\\n")
>>> p.read_text(), sorted(f.name for f in p.parent.iterdir())
('replaced\\n', ['notes.txt'])
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_bytes", "write_text"]


@contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path``,
    on an exception it is removed and ``path`` is left as it was."""
    path = Path(os.fspath(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(os.fspath(path))


def write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``Path(path)``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding)
    return Path(os.fspath(path))
