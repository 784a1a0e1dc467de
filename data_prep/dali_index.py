"""The index file NVIDIA DALI's `readers.webdataset` takes for each shard (`index_paths`): the `wds2idx`
format, one line per sample listing each member's extension, data offset, size and name.

Written beside each shard (`train/x-000000.tar` -> `train/x-000000.idx`) and listed in `_info.json`, so a
DALI pipeline reads the shards without scanning them first. Offsets come from tarfile's own parse of
the shard (`offset_data`), which stays right where extra headers (pax, GNU long names) precede a member.
"""

from __future__ import annotations

import os
import tarfile

from .atomic import atomic_write

VERSION = "v1.2"  # the format DALI 2.x's wds2idx writes


def index_name(shard_file: str) -> str:
    """train/x-000000.tar -> train/x-000000.idx"""
    base, ext = os.path.splitext(shard_file)
    return base + ".idx" if ext == ".tar" else shard_file + ".idx"


def build(shard_path: str) -> str:
    """The index of one shard, as wds2idx writes it: members grouped into samples by the name before the
    first dot of the file name, in archive order."""
    samples: list[list[str]] = []
    last = None
    with tarfile.open(shard_path) as tf:
        for m in tf:
            if not m.isreg():
                continue
            dot = m.name.find(".", m.name.rfind("/") + 1)
            if dot <= m.name.rfind("/") + 1:  # no extension, or a hidden file: wds2idx leaves them out
                continue
            base, ext = m.name[:dot], m.name[dot + 1:]
            if base != last:
                samples.append([])
                last = base
            samples[-1].append(f"{ext} {m.offset_data} {m.size} {m.name}")
    if not samples:
        raise ValueError(f"{shard_path}: no samples to index")
    return "".join([f"{VERSION} {len(samples)}\n"] + [" ".join(s) + "\n" for s in samples])


def write(shard_path: str, index_path: str) -> None:
    """Write the index of `shard_path` to `index_path` atomically (atomic.py)."""
    atomic_write(index_path, build(shard_path).encode())
