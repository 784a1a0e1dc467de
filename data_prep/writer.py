"""Write shards in parallel: one task per shard, each atomic and recorded, so reruns keep them.

A shard is written atomically (atomic.py), then its DALI index (`<name>.idx`, dali_index.py); then a
done record (sample count, sha256, bytes, rejected and repaired images) is written beside the plan.
A shard is finished while its bytes still match that record (`finished`): a rerun keeps it (and writes
its index if it lacks one). Tar metadata is fixed, so output is byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

from . import dali_index
from .atomic import atomic_file, atomic_write
from .encode import EncodeOptions, RejectImage, to_rgb_jpeg
from .plan import PLAN_DIR, PlanSample, resolve
from .records import Record, read_bytes

TAR_MTIME = 0               # fixed member metadata: same input, same shard bytes
TAR_USER = "data_prep"
# Test hook: seconds to sleep after each shard, so a test can kill the CLI mid-run.
DELAY_ENV = "DATA_PREP_TEST_SHARD_DELAY"


@dataclass(frozen=True)
class ShardTask:
    out: str
    file: str                   # relative to `out`, e.g. train/imagenet-train-000000.tar
    samples: list[PlanSample]
    paths: dict[str, str | None]    # where this machine has the inputs the samples' sources name
    opts: EncodeOptions


@dataclass
class ShardResult:
    file: str
    count: int
    sha256: str
    bytes: int
    rejected: list = field(default_factory=list)
    repaired: list = field(default_factory=list)
    resized: int = 0
    kept: bool = False          # True when a finished shard from an earlier run was kept


class _HashingWriter:
    """File wrapper that hashes what the tar stream writes, saving a second read of the shard."""

    def __init__(self, f):
        self.f, self.sha, self.n = f, hashlib.sha256(), 0

    def write(self, b) -> int:
        self.sha.update(b)
        self.n += len(b)
        return self.f.write(b)


def done_path(out: str, file: str) -> str:
    return os.path.join(out, PLAN_DIR, "done", file.replace("/", "__") + ".json")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def finished(out: str, file: str, *, hashed: bool) -> ShardResult | None:
    """The done record of a finished shard: one whose file still has the recorded length and, when
    `hashed`, sha256 (None otherwise). Resume hashes before it keeps a shard; the manifest checks
    lengths only, since hashing every shard again is `verify`'s job."""
    try:
        with open(done_path(out, file)) as f:
            rec = ShardResult(**json.load(f), kept=True)
        path = os.path.join(out, file)
        if os.path.getsize(path) != rec.bytes or (hashed and sha256_file(path) != rec.sha256):
            return None
    except (OSError, ValueError, TypeError):    # no record, or not one of ours
        return None
    return rec


def write_shard(task: ShardTask) -> ShardResult:
    """Encode every sample of one shard and write it atomically; rejected images are recorded."""
    path = os.path.join(task.out, task.file)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    res = ShardResult(task.file, 0, "", 0)
    # Imported here: webdataset imports torch (seconds), which verify, merge and refusals never need.
    from webdataset import TarWriter
    with atomic_file(path) as raw:
        stream = _HashingWriter(raw)
        with TarWriter(stream, user=TAR_USER, group=TAR_USER, mtime=TAR_MTIME, encoder=False) as tw:
            for s in task.samples:
                # Recorded as the plan names it (no machine's paths); the manifest resolves it.
                source = f"{s.source}:{s.member}" if s.member else s.source
                try:
                    data = read_bytes(Record(s.key, None, resolve(s.source, task.paths), s.offset, s.size))
                    enc = to_rgb_jpeg(data, task.opts)
                except (RejectImage, OSError) as e:
                    res.rejected.append({"key": s.key, "source": source, "reason": str(e)})
                    continue
                tw.write({"__key__": s.key, "cls": str(s.cls).encode(), "jpg": enc.data})
                res.count += 1
                res.resized += enc.resized
                if enc.repair:
                    note = {"detail": enc.detail} if enc.detail else {}
                    res.repaired.append({"key": s.key, "source": source, "repair": enc.repair, **note})
    res.sha256, res.bytes = stream.sha.hexdigest(), stream.n
    if res.count:  # an index lists samples; a shard whose images were all rejected has none
        dali_index.write(path, os.path.join(task.out, dali_index.index_name(task.file)))
    os.makedirs(os.path.dirname(done_path(task.out, task.file)), exist_ok=True)
    record = {k: v for k, v in asdict(res).items() if k != "kept"}
    atomic_write(done_path(task.out, task.file), json.dumps(record).encode())
    if os.environ.get(DELAY_ENV):
        time.sleep(float(os.environ[DELAY_ENV]))
    return res


def keep_or_write(task: ShardTask) -> ShardResult:
    kept = finished(task.out, task.file, hashed=True)
    if kept is None:
        return write_shard(task)
    index = os.path.join(task.out, dali_index.index_name(task.file))
    if kept.count and not os.path.exists(index):  # kept from a run that wrote no index files yet
        dali_index.write(os.path.join(task.out, task.file), index)
    return kept


def remove_stale_tmp(out: str, files: list[str]) -> None:
    """Delete temp files a killed run left for these shards, their indexes and their done records (only
    these: other parts may be writing theirs)."""
    by_dir: dict[str, set[str]] = {}
    for f in files:
        for path in (os.path.join(out, f), os.path.join(out, dali_index.index_name(f)), done_path(out, f)):
            by_dir.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
    for d, names in by_dir.items():
        for n in os.listdir(d) if os.path.isdir(d) else ():
            base, sep, _ = n.partition(".tmp")
            if sep and base in names:
                os.remove(os.path.join(d, n))


def run_tasks(pool, tasks: Iterable[ShardTask]) -> Iterator[ShardResult]:
    """Keep or write each shard, yielding results as they finish (in any order)."""
    if pool is None:
        return map(keep_or_write, tasks)
    return pool.imap_unordered(keep_or_write, tasks, chunksize=1)
