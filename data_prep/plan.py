"""The plan: which image goes to which shard, decided once, deterministically, before any shard.

Class index = position of the WNID in sorted order. Each split is sorted by key, shuffled with a
seeded RNG and cut into balanced shards. The plan is saved (gzip JSON) so a resumed run or a
`merge` can check that it is finishing the same job.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import random
from collections import Counter
from collections.abc import Sequence

from .records import PrepError, Record

PLAN_DIR = "_prep"
PLAN_FILE = "plan.json.gz"


def shard_sizes(n: int, shard_size: int) -> list[int]:
    """Split n samples into ceil(n / shard_size) shards whose sizes differ by at most one."""
    if n == 0:
        return []
    count = math.ceil(n / shard_size)
    base, extra = divmod(n, count)
    return [base + 1 if i < extra else base for i in range(count)]


def unique_keys(records: list[Record]) -> list[Record]:
    """Make keys unique within a split: colliding stems (generic folders) get their class prefixed."""
    counts = Counter(r.key for r in records)
    out = [r if counts[r.key] == 1 else Record(f"{r.wnid}_{r.key}", r.wnid, r.path, r.offset,
                                               r.size, r.member) for r in records]
    dupes = [k for k, c in Counter(r.key for r in out).items() if c > 1]
    if dupes:
        raise PrepError(f"duplicate image names that cannot be told apart: {sorted(dupes)[:5]}")
    return out


def make_plan(splits: dict[str, list[Record]], classes: list[dict], *, seed: int, shard_size: int,
              prefix: str, params: dict, rejected: list[dict], skipped: Sequence[dict] = ()) -> dict:
    """Build the JSON-able plan: per split, a list of shards, each a list of samples."""
    index = {c["wnid"]: c["index"] for c in classes}
    sources: dict[str, int] = {}
    plan_splits = {}
    for split, records in splits.items():
        records = sorted(unique_keys(records), key=lambda r: r.key)
        # One RNG per split, seeded by (seed, split): adding a val split never changes train.
        random.Random(f"{seed}/{split}").shuffle(records)
        shards, start = [], 0
        for i, size in enumerate(shard_sizes(len(records), shard_size)):
            samples = []
            for r in records[start:start + size]:
                src = sources.setdefault(r.path, len(sources))
                samples.append([r.key, index[r.wnid], src, r.offset, r.size, r.member])
            shards.append({"file": f"{split}/{prefix}-{split}-{i:06d}.tar", "samples": samples})
            start += size
        plan_splits[split] = shards
    return {"format": 1, "params": params, "classes": classes, "sources": list(sources),
            "splits": plan_splits, "rejected": rejected, "skipped": list(skipped)}


def plan_digest(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def plan_path(out: str) -> str:
    return os.path.join(out, PLAN_DIR, PLAN_FILE)


def save_or_check_plan(plan: dict, out: str) -> None:
    """Write the plan before any shard; on a rerun, insist that the plan is unchanged."""
    path = plan_path(out)
    if os.path.exists(path):
        old = load_plan(out)
        if plan_digest(old) != plan_digest(plan):
            changed = [k for k in old["params"] if old["params"].get(k) != plan["params"].get(k)]
            why = f"parameters differ: {changed}" if changed else "the source images differ"
            raise PrepError(f"{out} holds shards of a different plan ({why}); "
                            "rerun with the original arguments or use a new --out")
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"     # parts may start together on a shared file system
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(json.dumps(plan).encode())
        f.flush()
    os.replace(tmp, path)


def load_plan(out: str) -> dict:
    path = plan_path(out)
    if not os.path.exists(path):
        raise PrepError(f"no plan at {path}: was this directory written by data_prep?")
    with gzip.open(path, "rb") as f:
        return json.loads(f.read())


def shard_part(ordinal: int, num_parts: int) -> int:
    """Which of `num_parts` machines writes the shard with this global ordinal (round robin)."""
    return ordinal % num_parts
