"""Atomic file writes: a reader sees the old file or the new one, never a half-written one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, content: str | bytes | Callable[[Path], object]) -> Path:
    """Write ``content`` to ``path`` through a hidden temporary file and one rename.

    ``content`` is text, bytes, or a function that writes the file at the path it is given
    (e.g. ``fig.savefig``; the temporary name keeps ``path``'s suffix so writers that pick a
    format by suffix still work). The parent folder is created; on any error the temporary
    file is removed and ``path`` is left as it was. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        if isinstance(content, str):
            tmp.write_text(content)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            content(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
