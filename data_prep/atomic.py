"""Atomic, durable file writes for everything data_prep writes into --out: shards, done records, the
plan and `_info.json`. A crash or a kill leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import BinaryIO


def tmp_name(path: str) -> str:
    """Per-process temp name: a worker orphaned by a killed run may still be writing its own.
    `writer.remove_stale_tmp` finds leftovers by the `.tmp` infix."""
    return f"{path}.tmp{os.getpid()}"


def fsync_dir(folder: str) -> None:
    """Make a rename inside `folder` durable (the rename itself lives in the folder's entries)."""
    fd = os.open(folder or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[BinaryIO]:
    """Write `path` through a temp file: fsync it, rename it over `path`, fsync the folder.
    On any error the temp file is removed and `path` is left as it was."""
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    fsync_dir(os.path.dirname(path))


def atomic_write(path: str, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)
