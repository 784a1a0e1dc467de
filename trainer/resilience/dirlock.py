"""One writer per folder: a lock file that names its holder and is released when the holder is gone.

`acquire(folder, what)` takes an exclusive flock on `<folder>/.lock` and writes who holds it (host,
pid, command, since when). The kernel drops a flock when its process ends, SIGKILL included, so a lock
never outlives its holder and there is no stale file to clean up; on NFS the server drops it when the
client's lease ends. A second writer gets a LockedError that names the holder. Used by the trainer
(run.dir, main rank) and data_prep (--out). Torch-free.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from trainer.errors import LockedError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class DirLock:
    """A held lock; `release()` (or the process ending) frees it."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def acquire(folder: str | os.PathLike, what: str) -> DirLock:
    """Hold `folder` (created if missing) for this process, or raise LockedError naming the holder.

    `what` says in the error which setting names the folder, e.g. "run.dir" or "--out".
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            # e.g. Lustre mounted without -o flock: run unguarded rather than not at all
            os.close(fd)
            log.warning("cannot lock %s (%s): this filesystem has no file locks, so nothing stops a second "
                        "writer from using %s=%s at the same time", path, e, what, folder)
            return DirLock(None)
        holder = _read_holder(fd)
        os.close(fd)
        raise LockedError(
            f"{what}={folder} is in use by {holder}. Two writers would corrupt each other's files: wait for "
            f"it to finish, stop it, or choose another {what}. (The lock, {path}, is released as soon as "
            "its holder exits, also when it is killed.)"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({
        "host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv)[:500],
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }).encode() + b"\n")
    return DirLock(fd)


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096) or b"{}")
        return f"pid {info['pid']} on host {info['host']} ({info['command']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file names no holder yet)"
