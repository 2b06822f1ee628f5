"""Writing run outputs (``summary.json``, ``history.csv``, ``report.md``, a teacher checkpoint and its
JSON) so that a kill never leaves a truncated file and a failed write (disk full, I/O error) names itself.

:func:`atomic_write` writes to a temporary file in the destination's folder, then renames it over the
destination (``os.replace``, atomic on POSIX): a reader, or a rerun, sees the old file or the new one,
never part of one. An ``OSError`` on the way is an :class:`OutputError` naming the file and the reason;
the main job turns it into one line on stderr and exit status 2 (``nascomp.run``).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable


class OutputError(RuntimeError):
    """A run output could not be written (disk full, I/O error, no permission); it names the file."""


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``. On any
    failure the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {str(path)!r}: {_reason(exc)}") from exc
        raise
    return path


def make_folder(path: str | Path) -> Path:
    """Create the folder that will hold ``path`` (and its parents) and check that a file can be written
    in it: a folder that cannot be made (a file in the way, no permission) or that exists but takes no
    file (no permission, a read-only file system) is an :class:`OutputError` naming ``path`` and the
    folder. The check creates and removes an empty temporary file of a unique name (``tempfile.mkstemp``),
    so it holds for root as well, which permission bits alone (``os.access``) do not."""
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: cannot make its folder {str(folder)!r}: {_reason(exc)}") from exc
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{Path(path).name}.", suffix=".probe")
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: its folder {str(folder)!r} takes no file: {_reason(exc)}") from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return folder


def _reason(exc: OSError) -> str:
    """An ``OSError`` as the tail of an :class:`OutputError`: the reason, then the errno where there is one."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason}{f' (errno {exc.errno})' if exc.errno else ''}"


def write_text(path: str | Path, text: str) -> Path:
    """``Path.write_text`` through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))
