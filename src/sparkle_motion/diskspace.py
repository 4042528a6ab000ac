"""Disk-full detection: one place that knows what ENOSPC looks like and names it plainly.

A full disk shows up in three disguises: an ``OSError`` with ``ENOSPC`` /
``EDQUOT`` from a write, SQLite's ``SQLITE_FULL`` ("database or disk is full"),
and a subprocess (ffmpeg) that prints "No space left on device" and exits
non-zero.  Each is turned into one :class:`~sparkle_motion.errors.DiskFullError`
(HTTP 507) naming the store-relative path and the free space, instead of
"ffmpeg exited with 228".
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparkle_motion.errors import DiskFullError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# What a full disk prints in a subprocess's stderr or SQLite's message.
DISK_FULL_MARKERS = ("no space left on device", "disk quota exceeded", "database or disk is full")
SQLITE_FULL = 13

__all__ = ["Ballast", "disk_full_error", "disk_full_guard", "free_bytes", "home_relative", "is_disk_full",
           "mentions_disk_full"]


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes free to us on the volume holding ``path`` (its nearest existing parent); None if unknowable."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def home_relative(path: str | os.PathLike[str] | None, root: str | os.PathLike[str] | None = None) -> str:
    """``path`` relative to the artifact root (``root`` or ``SPARKLE_HOME``); else its last component.

    Errors travel to clients, which have no business learning the server's layout.
    """
    if path is None or str(path) == "":
        return "."
    given = Path(path)
    if root is None:
        from sparkle_motion.config import get_settings

        root = get_settings().home
    base = Path(root).resolve()
    candidate = given if given.is_absolute() else base / given
    try:
        return Path(os.path.normpath(candidate)).relative_to(base).as_posix() or "."
    except ValueError:
        return given.name or "."


def mentions_disk_full(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in DISK_FULL_MARKERS)


def is_disk_full(exc: BaseException) -> bool:
    """True for an ENOSPC/EDQUOT OSError or a SQLITE_FULL error, wherever it was raised."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or mentions_disk_full(str(exc))
    return False


def disk_full_error(path: str | os.PathLike[str] | None, root: str | os.PathLike[str] | None = None, *,
                    cause: str = "") -> DiskFullError:
    """A DiskFullError naming ``path`` relative to the store root and the free space left there."""
    if root is None:
        from sparkle_motion.config import get_settings

        root = get_settings().home
    relative = home_relative(path, root)
    free = free_bytes(Path(root) / relative)
    free_text = "unknown" if free is None else f"{free / 1e6:.1f} MB"
    context: dict[str, object] = {"path": relative, "free_bytes": free}
    if cause:
        context["cause"] = cause[-500:]
    where = "under SPARKLE_HOME" if relative == "." else f"{relative} under SPARKLE_HOME"
    return DiskFullError(f"disk full: cannot write {where} ({free_text} free); "
                         "free some space (e.g. `sparkle-motion prune`) and resume the run", context=context)


@contextmanager
def disk_full_guard(path: str | os.PathLike[str] | None, root: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Re-raise a disk-full error raised inside the block as DiskFullError naming ``path``."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, sqlite3.Error) as exc:
        if not is_disk_full(exc):
            raise
        where = getattr(exc, "filename", None) or path
        raise disk_full_error(where, root, cause=f"{type(exc).__name__}: {exc}") from exc


class Ballast:
    """A file of reserved space under SPARKLE_HOME, given up when the disk is full.

    When the disk fills, every write fails, including the one that records the
    failure: the run would stay 'running' with nobody to say why.  The ballast
    is released (deleted) to make room for that record, and re-made once space
    is back (at start and before each run).
    """

    def __init__(self, path: str | os.PathLike[str], size_bytes: int = 1 << 20) -> None:
        self.path = Path(path)
        self.size_bytes = size_bytes

    def ensure(self) -> bool:
        """Create the ballast if it is missing and there is room; True when it is in place."""
        try:
            if self.path.is_file() and self.path.stat().st_size >= self.size_bytes:
                return True
            temp = self.path.with_name(self.path.name + ".part")
            with open(temp, "wb") as out:
                out.write(b"\0" * self.size_bytes)  # real blocks (not a sparse file): they are what we give back
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
            return True
        except OSError:
            self.path.with_name(self.path.name + ".part").unlink(missing_ok=True)
            return False

    def release(self) -> bool:
        """Delete the ballast; True if there was one to give back."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
