"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

Also the pieces shared by everything that stages output beside its target: naming what a full
disk means (:func:`out_of_space`), and removing the staging files a killed process left
(:func:`remove_stale_staging`).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

#: ``errno`` -> the words an error message uses: the write failures no retry can fix.
OUT_OF_SPACE = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit exceeded",
}


def write_atomic(
    path: str | Path,
    content: str | bytes | Callable[[Path], object],
    keep_suffix: bool = True,
) -> Path:
    """Write ``content`` to ``path`` through a hidden temporary file and one rename.

    ``content`` is text, bytes, or a function that writes the file at the path it is given
    (e.g. ``fig.savefig``). The temporary file sits beside ``path`` (same filesystem, so the
    rename never turns into a copy): ``.<stem>.tmp-<pid><suffix>``, keeping ``path``'s suffix for
    writers that pick a format by suffix, or with ``keep_suffix=False`` ``.<name>.tmp-<pid>`` (a
    ``*.ckpt`` glob never sees it). The parent folder is created; on any error the temporary file
    is removed and ``path`` is left as it was. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(staging_name(path, keep_suffix))
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


def staging_name(path: Path, keep_suffix: bool = True, pid: int | None = None) -> str:
    """The name of :func:`write_atomic`'s temporary file for ``path`` (process ``pid``)."""
    pid = os.getpid() if pid is None else pid
    if keep_suffix:
        return f".{path.stem}.tmp-{pid}{path.suffix}"
    return f".{path.name}.tmp-{pid}"


def out_of_space(err: BaseException) -> str | None:
    """``"disk full"`` (or quota, or file size limit) when ``err`` is such a write failure."""
    return OUT_OF_SPACE.get(getattr(err, "errno", None)) if isinstance(err, OSError) else None


def free_space(folder: str | Path) -> str:
    """The free space of ``folder``'s filesystem in words (``"3.2 MB"``; ``"unknown"``)."""
    try:
        return size_in_words(shutil.disk_usage(folder).free)
    except OSError:
        return "unknown"


def size_in_words(num_bytes: int) -> str:
    """``123 B``, ``4.5 kB``, ``12.3 MB``, ``1.20 GB`` (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.3g} {unit}"
    return f"{num_bytes} B"


def process_running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (this process counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OSError:
        return True  # cannot tell: treat as running, never delete another process's files
    return True


def remove_stale_staging(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Remove the entries of ``folder`` whose names match ``pattern`` (a group ``pid``) and whose
    process is gone: the staging files or folders a killed writer left. Returns those kept
    because their process still runs (a concurrent writer, or a reused process id)."""
    kept = []
    if not folder.is_dir():
        return kept
    for entry in folder.iterdir():
        match = pattern.fullmatch(entry.name)
        if not match:
            continue
        if process_running(int(match["pid"])):
            kept.append(entry)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return kept
