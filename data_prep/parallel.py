"""The process pool shared by shard writing and verification."""

from __future__ import annotations

import multiprocessing as mp


def open_pool(workers: int):
    """A process pool, or None to run in this process.

    Call it before starting any thread (e.g. a tqdm bar): fork copies only the calling thread.
    Fork is preferred because workers then skip re-importing torch (which webdataset imports):
    seconds per process.
    """
    if workers <= 1:
        return None
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(workers)
