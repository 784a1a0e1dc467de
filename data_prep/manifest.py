"""The `_info.json` manifest (timm's schema plus our fields), assembled from the plan and the
done record of every shard; `merge` is the same step run after several parts have finished.
Sources are named where the plan's `paths` say the inputs are (see plan.py).
"""

from __future__ import annotations

import json
import os

from . import dali_index
from .atomic import atomic_write
from .plan import load_plan, resolve_sources
from .records import PrepError
from .writer import ShardResult, finished

INFO_FILE = "_info.json"


def shard_records(out: str, plan: dict) -> tuple[dict[str, ShardResult], list[str]]:
    """Done records of the finished shards by file, and the planned shards that are not finished."""
    records, missing = {}, []
    for shards in plan["splits"].values():
        for shard in shards:
            rec = finished(out, shard["file"], hashed=False)
            if rec is None:
                missing.append(shard["file"])
            else:
                records[shard["file"]] = rec
    return records, missing


def build_info(plan: dict, records: dict[str, ShardResult]) -> dict:
    splits, rejected, repaired = {}, list(plan["rejected"]), []
    for split, shards in plan["splits"].items():
        recs = [records[s["file"]] for s in shards]
        splits[split] = {
            "name": split,
            "num_samples": sum(r.count for r in recs),
            "filenames": [s["file"] for s in shards],
            "shard_lengths": [r.count for r in recs],
            "shard_sha256": [r.sha256 for r in recs],
            "shard_bytes": [r.bytes for r in recs],
            # DALI's readers.webdataset(index_paths=...): one wds2idx file per shard, "" for an empty shard
            "index_filenames": [dali_index.index_name(s["file"]) if r.count else "" for s, r in zip(shards, recs)],
        }
        for r in recs:
            rejected += [dict(x, split=split) for x in r.rejected]
            repaired += [dict(x, split=split) for x in r.repaired]
    paths = plan["paths"]
    return {
        "name": plan["params"]["name"],
        "num_classes": len(plan["classes"]),
        "splits": splits,
        "classes": plan["classes"],
        "rejected": sorted(resolve_sources(rejected, paths), key=lambda x: (x["split"], x["key"], x["source"])),
        "repaired": sorted(resolve_sources(repaired, paths), key=lambda x: (x["split"], x["key"])),
        "skipped": resolve_sources(plan["skipped"], paths),     # folders/files that are not classes
        "prep": {**plan["params"], **paths},
    }


def write_info(out: str, info: dict) -> str:
    path = os.path.join(out, INFO_FILE)
    atomic_write(path, (json.dumps(info, indent=1) + "\n").encode())
    return path


def merge(out: str, plan: dict | None = None) -> dict:
    """Write `_info.json` once every planned shard is present; name the missing ones otherwise."""
    plan = plan or load_plan(out)
    records, missing = shard_records(out, plan)
    if missing:
        raise PrepError(f"{len(missing)} planned shard(s) missing or incomplete in {out}, "
                        f"e.g. {missing[:3]}; run the remaining parts first")
    info = build_info(plan, records)
    write_info(out, info)
    return info
