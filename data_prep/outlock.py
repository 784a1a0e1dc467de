"""One writer per `--out`: `folder`, `imagenet` and `merge` hold the output folder for their whole run.

A second run on the same folder would delete the first one's temp files as stale leftovers. Parts
of a multi-machine run (`--num-parts P --part I`) may share one --out (they write disjoint shards
and clean only their own temp files), so a part holds only `_prep/locks/part-I-of-P/.lock`, after
checking that no whole-folder writer holds `--out/.lock`; a whole-folder writer (a single-part run
or `merge`) holds `--out/.lock` and every part lock. The locks are trainer/resilience/dirlock.py's flocks:
they name their holder and are released when it exits, also when it is killed.
"""

from __future__ import annotations

import os
import time

from trainer.resilience.dirlock import DirLock, LockedError, acquire

from .plan import PLAN_DIR
from .records import PrepError

PART_LOCKS = os.path.join(PLAN_DIR, "locks")
# Parts launched together each look at --out's lock for a moment; retry past such a glance.
PEEK_SECONDS = 5.0


def _peek(out: str) -> None:
    """Raise LockedError if a whole-folder writer holds `out` (for longer than a glance)."""
    deadline = time.monotonic() + PEEK_SECONDS
    while True:
        try:
            acquire(out, "--out").release()
            return
        except LockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def hold(out: str, num_parts: int = 1, part: int = 0) -> list[DirLock]:
    """Hold what this writer needs of `out` (creating it), or raise PrepError naming the holder."""
    held: list[DirLock] = []
    try:
        if num_parts == 1:
            held.append(acquire(out, "--out"))
            parts = os.path.join(out, PART_LOCKS)
            for name in sorted(os.listdir(parts)) if os.path.isdir(parts) else ():
                held.append(acquire(os.path.join(parts, name), "--out"))
        else:
            held.append(acquire(os.path.join(out, PART_LOCKS, f"part-{part}-of-{num_parts}"), "--out"))
            _peek(out)
    except LockedError as e:
        release(held)
        raise PrepError(str(e)) from None
    return held


def release(held: list[DirLock]) -> None:
    for lock in held:
        lock.release()
