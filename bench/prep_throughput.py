"""Data-prep throughput: our parallel shard writer against a plain sequential loop that writes the
same shards, side by side in one run (best of --rounds, alternating). Prints a JSON object last:
images/s (wall), images per CPU-second (per worker), and the cores the workers really got.

  python -m bench.prep_throughput [--images DIR] [--workers N] [--max-short-side N]

DIR defaults to ../shared/imagenet-samples beside the checkout (1,000 real ImageNet JPEGs, `<wnid>_<name>.JPEG`)
when present; otherwise ImageNet-sized images are generated.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time

import numpy as np
from webdataset import TarWriter

from bench.samples import SAMPLES
from data_prep.encode import EncodeOptions, RejectImage, to_rgb_jpeg
from data_prep.inputs import Inputs
from data_prep.plan import class_table, make_plan, resolve
from data_prep.prepare import PrepConfig, prepare
from data_prep.records import Record, is_image_name, read_bytes
from data_prep.synthetic import encode, make_image
from data_prep.writer import TAR_MTIME, TAR_USER


def real_records(folder: str) -> list[Record]:
    """Flat `<wnid>_<name>.JPEG` files; the WNID prefix is the class."""
    names = sorted(n for n in os.listdir(folder) if is_image_name(n))
    return [Record(os.path.splitext(n)[0], n.split("_")[0], os.path.join(folder, n)) for n in names]


def generated_records(folder: str, count: int = 1000, classes: int = 100) -> list[Record]:
    """ImageNet-like sizes (300-500 px sides) for machines without the sample folder."""
    records = []
    for i in range(count):
        rng = np.random.default_rng(i)
        size = (int(rng.integers(300, 501)), int(rng.integers(300, 501)))
        path = os.path.join(folder, f"img_{i:05d}.JPEG")
        with open(path, "wb") as f:
            f.write(encode(make_image(rng, i % classes, classes, size), quality=90))
        records.append(Record(f"img_{i:05d}", f"n{i % classes:08d}", path))
    return records


def sequential(records: list[Record], folder: str, out: str, shard_size: int, opts: EncodeOptions) -> None:
    """The plain loop: plan, then read -> encode -> TarWriter, one image after another."""
    classes = class_table(sorted({r.wnid for r in records if r.wnid is not None}))
    paths: dict[str, str | None] = {"train": folder}
    plan = make_plan({"train": records}, classes, paths=paths, seed=0, shard_size=shard_size,
                     prefix="imagenet", params={})
    for shard in plan["splits"]["train"]:
        path = os.path.join(out, shard["file"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with TarWriter(path, user=TAR_USER, group=TAR_USER, mtime=TAR_MTIME, encoder=False) as tw:
            for s in shard["samples"]:
                rec = Record(s.key, None, resolve(s.source, paths), s.offset, s.size)
                try:
                    data = to_rgb_jpeg(read_bytes(rec), opts).data
                except RejectImage:
                    continue
                tw.write({"__key__": s.key, "cls": str(s.cls).encode(), "jpg": data})


def ours(records: list[Record], folder: str, out: str, shard_size: int, opts: EncodeOptions, workers: int) -> None:
    classes = class_table(sorted({r.wnid for r in records if r.wnid is not None}))
    cfg = PrepConfig(out, shard_size, 0, workers, "imagenet", opts, progress=False)
    prepare(Inputs({"train": records}, classes, params={"name": "bench"}, paths={"train": folder}), cfg)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (our pool's workers are joined)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _burn(n: int) -> float:
    t, x = time.perf_counter(), 0
    for i in range(n):
        x += i * i
    return time.perf_counter() - t


def effective_cores(workers: int, n: int = 5_000_000) -> float:
    """How many cores `workers` processes really get right now (other jobs share the machine):
    the same CPU-bound loop run once alone and once per worker in parallel."""
    from data_prep.parallel import open_pool

    alone = _burn(n)
    pool = open_pool(workers)
    if pool is None:
        return 1.0
    with pool:
        t = time.perf_counter()
        pool.map(_burn, [n] * workers)
        return round(workers * alone / (time.perf_counter() - t), 2)


def shard_digests(out: str) -> list[str]:
    d = os.path.join(out, "train")
    return [hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for f in sorted(os.listdir(d)) if f.endswith(".tar")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=SAMPLES if os.path.isdir(SAMPLES) else None)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shard-size", type=int, default=50)
    ap.add_argument("--max-short-side", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    opts = EncodeOptions(max_short_side=a.max_short_side)
    with tempfile.TemporaryDirectory() as tmp:
        if a.images:
            records, source, folder = real_records(a.images), a.images, a.images
        else:
            folder = os.path.join(tmp, "src")
            os.makedirs(folder)
            records, source = generated_records(folder), "generated"
        for r in records:               # warm the page cache so both sides read from memory
            read_bytes(r)
        best = {"sequential": float("inf"), "ours": float("inf")}
        cpu = {"sequential": float("inf"), "ours": float("inf")}
        for i in range(a.rounds):
            for name in ("sequential", "ours"):
                out = os.path.join(tmp, f"{name}{i}")
                t, c = time.perf_counter(), _cpu_seconds()
                if name == "sequential":
                    sequential(records, folder, out, a.shard_size, opts)
                else:
                    ours(records, folder, out, a.shard_size, opts, a.workers)
                best[name] = min(best[name], time.perf_counter() - t)
                cpu[name] = min(cpu[name], _cpu_seconds() - c)
        cores = effective_cores(a.workers)
        identical = shard_digests(os.path.join(tmp, "sequential0")) == shard_digests(os.path.join(tmp, "ours0"))
    n = len(records)
    result = {
        "images": n, "source": source, "workers": a.workers, "cpu_count": os.cpu_count(),
        "max_short_side": a.max_short_side,
        "sequential_img_s": round(n / best["sequential"], 1),
        "ours_img_s": round(n / best["ours"], 1),
        "ours_img_s_per_worker": round(n / best["ours"] / a.workers, 1),
        "speedup": round(best["sequential"] / best["ours"], 2),
        # Images per CPU-second: what one worker does with a core to itself.
        "sequential_img_per_cpu_s": round(n / cpu["sequential"], 1),
        "ours_img_per_cpu_s": round(n / cpu["ours"], 1),
        "effective_cores": cores,
        "identical_shards": identical,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
