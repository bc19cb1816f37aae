"""Exclusive locks on files, held by a process for as long as it lives.

An `fcntl.flock` is released by the kernel when the last descriptor of its process closes, however
the process ends (kill -9 included), so a crashed holder never leaves anything locked: a lock file
left on disk is free unless held. The holder writes its pid and command line into the file, so a
process that finds it locked can name who holds it. Used by the GPU leases (one lock per GPU) and
by the checkpoint folders (one lock per training run).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
from contextlib import suppress
from pathlib import Path

_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def _open(path: Path, shared: bool) -> int:
    """A descriptor of `path` to flock; read-only when another user created it (flock needs none)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 if shared else 0o644)
    except PermissionError:
        return os.open(path, os.O_RDONLY)
    if shared:
        with suppress(OSError):
            os.fchmod(fd, 0o666)  # let other users' processes take this lock too (umask would narrow it)
    return fd


def try_lock(path: Path, shared: bool = False) -> int | None:
    """The descriptor holding an exclusive lock on `path` (created if missing), or None when another
    process holds it. Closing the descriptor releases the lock. `shared`: other users may lock it too.

    A holder may delete the lock file when it is done with it (a finished checkpoint folder goes):
    a lock taken on a file that was unlinked meanwhile guards nothing, so it is taken again on the
    file that now has the name.
    """
    while True:
        fd = _open(path, shared)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _BUSY:
                return None
            raise
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)
    with suppress(OSError):  # who holds it, for the message of a process that finds it taken
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {' '.join(sys.argv)}\n".encode())
    return fd


def holder(path: Path) -> tuple[str, str]:
    """(pid, command line) of the process that last took the lock on `path`; ("?", "") when unknown."""
    try:
        pid, _, command = path.read_text().strip().partition(" ")
    except OSError:
        return "?", ""
    return pid or "?", command


def is_locked(path: Path) -> bool:
    """Whether another process holds the lock on `path` now (False when the file does not exist)."""
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _BUSY:
            return True
        raise
    finally:
        os.close(fd)
    return False


def release(fd: int) -> None:
    with suppress(OSError):
        os.close(fd)  # closing the last descriptor releases the flock
