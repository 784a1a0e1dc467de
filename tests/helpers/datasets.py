"""Copies of a prepared dataset with some shard members changed: damaged data for the fault tests."""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path


def copy_dataset(src: Path, dst: Path, change: Callable[[str, str, bytes], bytes]) -> list[tuple[str, str]]:
    """Copy the dataset at `src` to `dst`, passing each member of every train shard through
    `change(key, extension, data)`; returns the (shard, key) pairs whose bytes changed."""
    shutil.copytree(src, dst)
    changed = []
    for shard in sorted((dst / "train").glob("*.tar")):
        with tarfile.open(shard) as t:
            members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
        shard.unlink()  # data_prep writes shards read-only
        with tarfile.open(shard, "w") as t:
            for member, data in members:
                key, ext = member.name.split(".", 1)
                new = change(key, ext, data)
                if new != data:
                    changed.append((str(shard), key))
                member.size = len(new)
                t.addfile(member, io.BytesIO(new))
    return changed
