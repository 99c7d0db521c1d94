"""Write-then-rename, so an interrupted run never leaves a half-written file or report behind.

Files are written beside their target and renamed over it; they get the permissions an ordinary
``open()`` would give (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.

Folders (a study's report) are published by :func:`publish_dir` under a lock (:mod:`filelock`, one lock per
target folder, in ``<parent>/.locks/``), so two runs finishing together publish one after the other. On
Linux (``renameat2(RENAME_EXCHANGE)``) and macOS (``renamex_np(RENAME_SWAP)``) the new folder and the old
one swap places in one atomic step: a reader of ``reports/<study>/`` sees the old report or the new one,
never a missing or half-written folder; and the published tree stays plain files and folders (no symlinks),
which is what git commits. Elsewhere the swap falls back to two renames under the lock, with a moment in
which the folder is missing (:func:`recover_dir` repairs a publish killed in that moment).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def _temp_beside(path: Path, mode: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # as open() would create it, not mkstemp's 0o600
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    with _temp_beside(path, "wb") as handle:
        handle.write(data)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # Linux renameat2 flag
_RENAME_SWAP = 2  # macOS renamex_np flag
_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        except OSError:
            _LIBC = False
    return _LIBC


def exchange_paths(a: str | Path, b: str | Path) -> bool:
    """Swap two existing paths in one atomic step; False where the system or file system cannot."""
    libc = _libc()
    if not libc:
        return False
    a, b = os.fsencode(os.fspath(a)), os.fsencode(os.fspath(b))
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        result = libc.renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        result = libc.renamex_np(a, b, _RENAME_SWAP)
    else:
        return False
    if result == 0:
        return True
    err = ctypes.get_errno()
    import errno

    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV, getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)):
        return False  # not supported here: the caller falls back to renames
    raise OSError(err, f"cannot swap {os.fsdecode(a)} and {os.fsdecode(b)}: {os.strerror(err)}")


def publish_lock(final: str | Path, timeout: float = 600.0):
    """The lock that serialises publishing into folder ``final`` (a :class:`filelock.FileLock`)."""
    from filelock import FileLock

    final = Path(final)
    locks = final.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / f"{final.name}.lock"), timeout=timeout)


TRASH_GRACE_SECONDS = 60.0


def _purge_trash(trash: Path, grace: float) -> None:
    import time

    try:
        entries = list(trash.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            if time.time() - entry.stat().st_mtime > grace:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


def publish_dir(staging: str | Path, final: str | Path, grace: float = TRASH_GRACE_SECONDS) -> Path:
    """Replace folder ``final`` by folder ``staging``, under ``final``'s publish lock.

    Where the system can, the two swap places atomically: a concurrent reader never finds ``final`` missing or
    partial. The old folder is moved to ``<parent>/.trash/`` and deleted by a later publish once it is
    ``grace`` seconds old, so a reader that opened the old folder just before the swap still lists it whole.
    Otherwise two renames (``final`` to ``.<name>.old``, ``staging`` to ``final``); :func:`recover_dir`
    undoes one killed midway.
    """
    import time
    import uuid

    staging, final = Path(staging), Path(final)
    if not staging.is_dir():
        raise FileNotFoundError(f"cannot publish {staging}: it is not a folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    trash = final.parent / ".trash"
    with publish_lock(final):
        recover_dir(final)
        if final.is_dir() and not final.is_symlink() and exchange_paths(staging, final):
            # ``staging`` now holds the old report: keep it a moment for readers that opened it
            trash.mkdir(exist_ok=True)
            try:
                old = trash / f"{final.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
                os.replace(staging, old)
                os.utime(old)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
            _purge_trash(trash, grace)
            return final
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(staging, final)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return final


def recover_dir(final: str | Path) -> bool:
    """Undo a publish that was interrupted between its two renames. Returns True if it restored."""
    final = Path(final)
    old = final.with_name(f".{final.name}.old")
    if old.exists() and not final.exists():
        os.replace(old, final)
        return True
    return False
