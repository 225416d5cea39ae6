"""Atomic file writes: every file the suite writes appears whole or not at all.

The content goes to a uniquely named temporary file in the target's directory (``tempfile.mkstemp``: unique
across processes and threads), is flushed and fsynced, then renamed over the target with ``os.replace``.
An interrupted writer (exception, kill -9) leaves at most a ``.tmp`` file behind, never a half-written target.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on error removed.

    ``suffix`` lets writers that pick a format from the file name (PIL, matplotlib) see the right extension.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix + ".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path, write: Callable[[Path], None], suffix: str = "") -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically; returns ``path``."""
    with atomic_path(path, suffix) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path, obj, **kwargs) -> Path:
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("sort_keys", True)
    return atomic_write_text(path, json.dumps(obj, **kwargs) + "\n")
