"""Copies of a prepared dataset with some shard members changed: damaged data for the fault tests."""

from __future__ import annotations

import io
import json
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


# File names a malicious manifest may hold: each would run a command or leave the dataset if used.
BAD_NAMES = ["train/$(touch {marker}).tar", "x.tar; touch {marker}", "`touch {marker}`", "-o{marker}",
             "../../etc/passwd", "/etc/passwd", "train/../../x.tar"]
ROOTS = ["{root}", "pipe:cat {root}", "pipe:cat {root}/{{name}}"]  # the forms of data.root


def poisoned_dataset(shards: Path, tmp_path: Path, bad: str) -> tuple[Path, Path, str]:
    """A copy of the shards whose _info.json names a malicious file as the second train shard."""
    ds, marker = tmp_path / "dataset", tmp_path / "MARKER"
    shutil.copytree(shards, ds)
    info = json.loads((ds / "_info.json").read_text())
    name = bad.format(marker=marker)
    info["splits"]["train"]["filenames"][1] = name
    (ds / "_info.json").write_text(json.dumps(info))
    return ds, marker, name
