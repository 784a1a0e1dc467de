"""The plan: which image goes to which shard, decided once, deterministically, before any shard.

Class index = position of the WNID in sorted order (`class_table`). Each split is sorted by key,
shuffled with a seeded RNG and cut into balanced shards. The plan is saved (gzip JSON) so a resumed
run, another part or `merge` can check that it is finishing the same job. It names each source
relative to its split's input (`{train}/n01440764/x.JPEG`; `{train}` alone for an archive), so machines
that mount the inputs at different paths make the same plan; where they are is kept apart, under
`paths`, which is no part of the plan's identity.
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
from typing import NamedTuple

from .atomic import atomic_file
from .records import PrepError, Record

PLAN_DIR = "_prep"
PLAN_FILE = "plan.json.gz"
PLAN_FORMAT = 2     # 2: sources relative to the inputs (1 held absolute paths)


class PlanSample(NamedTuple):
    """One image of a shard; on disk, a JSON list of these fields in this order."""
    key: str
    cls: int
    source: str         # `{split}` + the path inside that split's input (see `relative`)
    offset: int         # -1: the whole file; else where the image's bytes start in the archive
    size: int           # byte length inside the archive
    member: str         # name inside the archive, for messages only


def class_table(wnids: list[str], names: dict[str, str] | None = None) -> list[dict]:
    """Class index = position of the WNID in sorted order; name falls back to the WNID."""
    names = names or {}
    return [{"index": i, "wnid": w, "name": names.get(w, w)} for i, w in enumerate(sorted(wnids))]


def relative(path: str, root: str, split: str) -> str:
    """`path` (`root` itself or joined onto it, maybe with `:member`) as `{split}` + the rest."""
    base = root.rstrip(os.sep)
    rest = path[len(base):]
    if not path.startswith(base) or rest[:1] not in ("", os.sep, ":"):
        raise ValueError(f"{path} is not inside {root}")
    return f"{{{split}}}{rest}"


def resolve(source: str, paths: dict[str, str | None]) -> str:
    """A `relative` source (or message) with this machine's path of its split's input put back."""
    split, _, rest = source[1:].partition("}")
    return str(paths[split]).rstrip(os.sep) + rest


def _relative_sources(entries: Sequence[dict], paths: dict[str, str | None]) -> list[dict]:
    return [dict(e, source=relative(e["source"], str(paths[e["split"]]), e["split"])) for e in entries]


def resolve_sources(entries: list[dict], paths: dict[str, str | None]) -> list[dict]:
    """Rejected/repaired/skipped entries with their `source` as a path on this machine."""
    return [dict(e, source=resolve(e["source"], paths)) for e in entries]


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


def make_plan(splits: dict[str, list[Record]], classes: list[dict], *, paths: dict[str, str | None],
              seed: int, shard_size: int, prefix: str, params: dict, rejected: Sequence[dict] = (),
              skipped: Sequence[dict] = ()) -> dict:
    """Build the JSON-able plan: per split, a list of shards, each a list of `PlanSample`s.

    `paths`: where this machine has each input; a split's records, and the `source` of each rejected
    and skipped entry (dicts with `split`), lie inside `paths[split]`."""
    index = {c["wnid"]: c["index"] for c in classes}
    plan_splits = {}
    for split, records in splits.items():
        root = str(paths[split])
        records = sorted(unique_keys(records), key=lambda r: r.key)
        # One RNG per split, seeded by (seed, split): adding a val split never changes train.
        random.Random(f"{seed}/{split}").shuffle(records)
        shards, start = [], 0
        for i, size in enumerate(shard_sizes(len(records), shard_size)):
            samples = [PlanSample(r.key, index[r.wnid], relative(r.path, root, split), r.offset, r.size,
                                  r.member) for r in records[start:start + size]]
            shards.append({"file": f"{split}/{prefix}-{split}-{i:06d}.tar", "samples": samples})
            start += size
        plan_splits[split] = shards
    return {"format": PLAN_FORMAT, "params": params, "paths": paths, "classes": classes,
            "splits": plan_splits, "rejected": _relative_sources(rejected, paths),
            "skipped": _relative_sources(skipped, paths)}


def plan_digest(plan: dict) -> str:
    """The plan's identity: all of it but `paths`, so parts may mount the inputs anywhere."""
    same = {k: v for k, v in plan.items() if k != "paths"}
    return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()


def plan_path(out: str) -> str:
    return os.path.join(out, PLAN_DIR, PLAN_FILE)


def save_or_check_plan(plan: dict, out: str, record_paths: bool) -> None:
    """Write the plan before any shard; on a rerun, insist that the plan is unchanged.

    `record_paths` (part 0, or a one-part run): store this run's input paths in a plan that names
    others, so the manifest names the inputs where part 0 (last) found them."""
    path = plan_path(out)
    if os.path.exists(path):
        old = load_plan(out)
        if plan_digest(old) != plan_digest(plan):
            changed = [k for k in old["params"] if old["params"].get(k) != plan["params"].get(k)]
            why = f"parameters differ: {changed}" if changed else "the source images differ"
            raise PrepError(f"{out} holds shards of a different plan ({why}); "
                            "rerun with the original arguments or use a new --out")
        if not record_paths or old["paths"] == plan["paths"]:
            return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Parts may start together on a shared file system: each writes its own temp file.
    with atomic_file(path) as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(json.dumps(plan).encode())


def load_plan(out: str) -> dict:
    path = plan_path(out)
    if not os.path.exists(path):
        raise PrepError(f"no plan at {path}: was this directory written by data_prep?")
    with gzip.open(path, "rb") as f:
        plan = json.loads(f.read())
    if plan.get("format") != PLAN_FORMAT:
        raise PrepError(f"{path} is a plan of another data_prep version (plan format {plan.get('format')}, "
                        f"this version reads {PLAN_FORMAT}): finish that run with the version that started "
                        "it, or start again with a new --out")
    return plan


def shard_part(ordinal: int, num_parts: int) -> int:
    """Which of `num_parts` machines writes the shard with this global ordinal (round robin)."""
    return ordinal % num_parts
