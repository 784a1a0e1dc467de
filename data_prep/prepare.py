"""Run one preparation: labelled records -> plan -> shards (parallel, resumable) -> manifest.

Shared by the `folder` and `imagenet` commands; everything that can be wrong with the inputs
has been checked before `prepare` is called, so a plan is only written for a sound job.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from . import __version__
from .encode import EncodeOptions
from .inputs import Inputs
from .manifest import INFO_FILE, build_info, shard_records, write_info
from .parallel import open_pool
from .plan import load_plan, make_plan, resolve_sources, save_or_check_plan, shard_part
from .records import PrepError, Record
from .writer import ShardTask, remove_stale_tmp, run_tasks

DEFAULT_SHARD_SIZE = 1250   # ImageNet train (1,281,167 images) -> 1,025 shards of ~1,250


@dataclass(frozen=True)
class PrepConfig:
    out: str
    shard_size: int = DEFAULT_SHARD_SIZE
    seed: int = 0
    workers: int = 1
    prefix: str = "imagenet"
    opts: EncodeOptions = field(default_factory=EncodeOptions)
    num_parts: int = 1
    part: int = 0
    progress: bool = True


@dataclass
class Summary:
    written: dict = field(default_factory=dict)     # split -> images written by this run's part
    rejected: list = field(default_factory=list)    # dicts: split, key, source, reason
    repaired: list = field(default_factory=list)
    resized: int = 0
    shards_written: int = 0
    shards_kept: int = 0
    ignored: int = 0
    skipped: list = field(default_factory=list)     # dicts: split, source, reason (not classes)
    seconds: float = 0.0
    info_path: str | None = None                    # None while other parts are unfinished


def check_labels(splits: dict[str, list[Record]], classes: list[dict]) -> None:
    known = {c["wnid"] for c in classes}
    for split, records in splits.items():
        unknown = sorted({str(r.wnid) for r in records if r.wnid not in known})
        if unknown:
            raise PrepError(f"{split}: images labelled with classes that are not in the class list: "
                            f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}")


def prepare(got: Inputs, cfg: PrepConfig) -> Summary:
    """Write (or finish writing) the shards of this part; write `_info.json` when all are done."""
    if cfg.shard_size < 1 or not 0 <= cfg.part < cfg.num_parts:
        raise PrepError("need --shard-size >= 1 and 0 <= --part < --num-parts")
    check_labels(got.splits, got.classes)
    # Imported before the pool forks, so workers inherit torch (webdataset's) instead of importing it.
    import webdataset  # noqa: F401
    start = time.time()
    params = {**got.params, "version": __version__, "seed": cfg.seed, "shard_size": cfg.shard_size,
              "prefix": cfg.prefix, "max_short_side": cfg.opts.max_short_side, "quality": cfg.opts.quality,
              "max_pixels": cfg.opts.max_pixels}
    rejected = [dict(r.as_dict(), split=split) for split, r in got.refused]
    plan = make_plan(got.splits, got.classes, paths=got.paths, seed=cfg.seed, shard_size=cfg.shard_size,
                     prefix=cfg.prefix, params=params, rejected=rejected, skipped=got.skipped)
    os.makedirs(cfg.out, exist_ok=True)
    save_or_check_plan(plan, cfg.out, record_paths=cfg.part == 0)

    tasks, split_of = [], {}
    ordinal = 0
    for split, shards in plan["splits"].items():
        for shard in shards:
            split_of[shard["file"]] = split
            if shard_part(ordinal, cfg.num_parts) == cfg.part:
                tasks.append(ShardTask(cfg.out, shard["file"], shard["samples"], got.paths, cfg.opts))
            ordinal += 1

    # The console names sources where this run found them.
    summary = Summary(written={s: 0 for s in plan["splits"]}, ignored=got.ignored,
                      rejected=resolve_sources(plan["rejected"], got.paths),
                      skipped=resolve_sources(plan["skipped"], got.paths))
    remove_stale_tmp(cfg.out, [t.file for t in tasks])
    pool = open_pool(min(cfg.workers, len(tasks)))  # before the bar's thread exists (see open_pool)
    bar = tqdm(total=sum(len(t.samples) for t in tasks), unit="img", disable=not cfg.progress,
               smoothing=0.05, dynamic_ncols=True, desc=f"writing {len(tasks)} shards")
    try:
        for r in run_tasks(pool, tasks):
            split = split_of[r.file]
            summary.written[split] += r.count
            summary.rejected += resolve_sources([dict(x, split=split) for x in r.rejected], got.paths)
            summary.repaired += resolve_sources([dict(x, split=split) for x in r.repaired], got.paths)
            summary.resized += r.resized
            summary.shards_kept += r.kept
            summary.shards_written += not r.kept
            bar.update(r.count + len(r.rejected))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()    # a no-op after success; stops the workers on Ctrl-C or error
    summary.seconds = time.time() - start
    records, missing = shard_records(cfg.out, plan)
    if not missing:  # every part finished; the manifest names the inputs as the stored plan does (part 0's)
        write_info(cfg.out, build_info(load_plan(cfg.out), records))
        summary.info_path = os.path.join(cfg.out, INFO_FILE)
    return summary

