"""`verify`: check a shard folder against its `_info.json`.

Per shard: present, byte count and sha256 as recorded, every sample a (jpg, cls) pair, the jpg a 3-channel
JPEG the trainer's decoder reads whole with no warning and within its limits (jpeg_check.py), the label in
range, the count as recorded, and its DALI index (where the manifest lists one) what dali_index builds from
the shard. Per split: unique keys and num_samples = sum of shard lengths. Returns a list of problems (empty =
all good).
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import Counter
from dataclasses import dataclass, field

import simplejpeg

from . import dali_index
from .jpeg_check import strict_check
from .manifest import INFO_FILE
from .parallel import open_pool
from .writer import sha256_file


@dataclass
class ShardCheck:
    file: str
    keys: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _check_sample(file: str, key: str, parts: dict[str, bytes], num_classes: int) -> list[str]:
    where = f"{file}: sample {key}"
    if set(parts) != {"jpg", "cls"}:
        return [f"{where} has members {sorted(parts)}, expected cls and jpg"]
    problems = []
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(parts["jpg"])
        strict_check(parts["jpg"], h, w)  # once, whole, as strictly as prep did, with the trainer's limits
        if colorspace not in ("YCbCr", "RGB"):
            problems.append(f"{where}: JPEG is {colorspace}, not RGB")
    except ValueError as e:
        problems.append(f"{where}: jpg does not decode ({e})")
    try:
        cls = int(parts["cls"].decode("ascii"))
        if not 0 <= cls < num_classes:
            problems.append(f"{where}: class {cls} out of range 0..{num_classes - 1}")
    except (UnicodeDecodeError, ValueError):
        problems.append(f"{where}: cls {parts['cls'][:20]!r} is not a decimal number")
    return problems


def _check_index(root: str, file: str, index: str) -> list[str]:
    if index != dali_index.index_name(file):  # never opens a name the manifest made up
        return [f"{file}: index file {index!r}, expected {dali_index.index_name(file)!r}"]
    try:
        with open(os.path.join(root, index)) as f:
            ok = f.read() == dali_index.build(os.path.join(root, file))
    except (OSError, ValueError, tarfile.TarError) as e:
        return [f"{index}: unreadable DALI index ({e})"]
    return [] if ok else [f"{index}: the DALI index does not match {file}; write it again with data_prep's "
                          "dali_index.write"]


def check_shard(args: tuple[str, str, int, str, int, int, str]) -> ShardCheck:
    root, file, length, sha, size, num_classes, index = args
    res, path = ShardCheck(file), os.path.join(root, file)
    if not os.path.exists(path):
        res.problems.append(f"{file}: missing")
        return res
    if os.path.getsize(path) != size:
        res.problems.append(f"{file}: {os.path.getsize(path)} bytes, manifest says {size}")
    if sha256_file(path) != sha:
        res.problems.append(f"{file}: sha256 differs from the manifest")
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path) as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                # a link is never followed: a dangling one would end extractfile in a KeyError
                member = tf.extractfile(m) if m.isreg() else None
                if member is None:
                    raise tarfile.TarError(f"{m.name} is not a regular file")
                samples.setdefault(key, {})[ext] = member.read()
    except (tarfile.TarError, OSError) as e:
        res.problems.append(f"{file}: unreadable tar ({e})")
    for key, parts in samples.items():
        res.problems += _check_sample(file, key, parts, num_classes)
    res.keys = list(samples)
    if len(samples) != length:
        res.problems.append(f"{file}: {len(samples)} samples, manifest says {length}")
    if index:
        res.problems += _check_index(root, file, index)
    return res


def verify(root: str, workers: int = 1) -> tuple[list[str], int]:
    """(problems, samples checked) for the dataset at `root`."""
    try:
        with open(os.path.join(root, INFO_FILE)) as f:
            info = json.load(f)
        num_classes = len(info["classes"])
        splits = info["splits"]
    except (OSError, ValueError, KeyError) as e:
        return [f"{root}/{INFO_FILE}: unreadable ({e})"], 0
    problems, jobs, split_of = [], [], {}
    for name, s in splits.items():
        lists = [s["filenames"], s["shard_lengths"], s["shard_sha256"], s["shard_bytes"]]
        if len({len(x) for x in lists}) != 1:
            problems.append(f"{name}: filenames, shard_lengths, shard_sha256, shard_bytes differ in length")
            continue
        if sum(s["shard_lengths"]) != s["num_samples"]:
            problems.append(f"{name}: num_samples {s['num_samples']} != sum of shard_lengths "
                            f"{sum(s['shard_lengths'])}")
        indexes = s.get("index_filenames") or [""] * len(s["filenames"])  # older manifests list none
        if len(indexes) != len(s["filenames"]):
            problems.append(f"{name}: index_filenames and filenames differ in length")
            continue
        for f, n, sha, size, index in zip(*lists, indexes):
            jobs.append((root, f, n, sha, size, num_classes, index))
            split_of[f] = name
    keys: dict[str, Counter] = {name: Counter() for name in splits}
    pool = open_pool(min(workers, len(jobs)))
    try:
        results = pool.imap(check_shard, jobs) if pool else map(check_shard, jobs)
        for r in results:
            problems += r.problems
            keys[split_of[r.file]].update(r.keys)
    finally:
        if pool is not None:
            pool.terminate()
    for name, counter in keys.items():
        dupes = [k for k, c in counter.items() if c > 1]
        if dupes:
            problems.append(f"{name}: {len(dupes)} keys appear more than once (e.g. {dupes[:3]})")
    return problems, sum(sum(c.values()) for c in keys.values())
