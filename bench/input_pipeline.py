"""Input pipeline throughput: the torchvision ImageFolder baseline (PIL decode, RandomResizedCrop(224),
flip, ToTensor, Normalize; eval: Resize(256), CenterCrop(224), ToTensor, Normalize), this project's
pipeline (shards -> uint8 batches; normalisation is left to the device), NVIDIA DALI's CPU pipeline on the
same shards (bench/dali_pipeline.py; skipped where DALI is not installed) and the decode limit (libjpeg-turbo
decoding every JPEG whole, simplejpeg, nothing else), side by side in one run on the same photos,
alternating rounds, best round of each.

  python -m bench.input_pipeline --images DIR [--workers N] [--max-short-side 256] [--decode gpu]

DIR holds class subfolders or flat `<wnid>_<name>.JPEG` files (../shared/imagenet-samples beside the checkout). Both
sides read the same bytes: the shards data_prep writes, and the same samples written out as an
ImageFolder tree. It runs on the photos as they are and, with --max-short-side, again on a copy
data_prep re-encodes. Rates are per worker process in the steady state after the first batch (whose
latency is reported apart): images per CPU-second of this process with --workers 0 (the default),
images per second / N with N workers. Also measured: a worker's peak memory at two shuffle-buffer
sizes, against the formula in trainer/config.py. The last line is one JSON object: baseline_img_s,
ours_img_s, dali_img_s, decode_limit_img_s, ratio (ours / baseline), ratio_vs_dali and
fraction_of_decode_limit (training) for the last variant run, ratio_vs_original_baseline (ours on that
variant against the baseline on the photos as they are), the load average before and after, and every
figure above.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import simplejpeg
import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from bench import dali_pipeline
from bench.samples import SAMPLES
from trainer.config import ConfigError, DataConfig
from trainer.data import jpeg
from trainer.data.jpeg import jpeg_size
from trainer.data.loader import Sample, TrainStream, _read, check_decode, eval_loader, train_loader
from trainer.data.manifest import load_manifest

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BASELINE = {
    "train": T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]),
    "eval": T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)]),
}


def stage(images: str, out: str) -> str:
    """An ImageFolder tree of links to DIR's photos (flat files: the WNID before the first '_')."""
    src = os.path.join(out, "src")
    for name in sorted(os.listdir(images)):
        path = os.path.join(os.path.abspath(images), name)
        if os.path.isdir(path):
            os.makedirs(src, exist_ok=True)
            os.symlink(path, os.path.join(src, name))
        elif name.lower().endswith((".jpeg", ".jpg")):
            os.makedirs(os.path.join(src, name.split("_")[0]), exist_ok=True)
            os.symlink(path, os.path.join(src, name.split("_")[0], name))
    return src


def prepare(src: str, out: str, max_short_side: int | None) -> tuple[str, str]:
    """Shards via the data_prep CLI, and the very same samples as an ImageFolder tree for the baseline."""
    shards = os.path.join(out, f"shards{max_short_side or ''}")
    cmd = [sys.executable, "-m", "data_prep", "folder", "--train", src, "--out", shards, "--shard-size", "250",
           "--no-progress"] + (["--max-short-side", str(max_short_side)] if max_short_side else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    folder = os.path.join(out, f"folder{max_short_side or ''}")
    for key, jpg, label, _ in _samples(shards):
        assert jpg is not None, f"{key} has no image"  # data_prep wrote these shards
        os.makedirs(os.path.join(folder, f"{label:04d}"), exist_ok=True)
        with open(os.path.join(folder, f"{label:04d}", f"{key}.JPEG"), "wb") as f:
            f.write(jpg)
    return shards, folder


def _samples(shards: str) -> list[Sample]:
    split = load_manifest(shards).train
    return list(_read(split, list(range(len(split.urls))), None))


def timed(batches) -> tuple[int, float, float, float]:
    """Steady state: (images after the first batch, their wall seconds, CPU seconds of this process),
    and the first batch's latency (worker start-up and, for ours, filling the shuffle buffer)."""
    start = time.perf_counter()
    it = iter(batches)
    images, _ = next(it)
    n, wall, cpu = 0, time.perf_counter(), time.process_time()
    first = wall - start
    for images, _ in it:
        n += len(images)
    if images.is_cuda:
        torch.cuda.synchronize()  # data.decode=gpu: its kernels run asynchronously
    return n, time.perf_counter() - wall, time.process_time() - cpu, first


def baseline_batches(folder: str, kind: str, workers: int, batch: int) -> DataLoader:
    return DataLoader(ImageFolder(folder, BASELINE[kind]), batch_size=batch, shuffle=kind == "train",
                      num_workers=workers)


def our_batches(shards: str, kind: str, cfg: DataConfig, batch: int, epoch: int):
    split = load_manifest(shards).train
    device = torch.device("cuda" if cfg.decode == "gpu" else "cpu")
    if kind == "eval":
        return eval_loader(split, cfg, device, local_batch=batch, rank=0, world_size=1)
    return train_loader(split, cfg, device, seed=0, epoch=epoch, start_step=0,
                             steps=split.num_samples // batch, local_batch=batch, rank=0, world_size=1)


def per_worker(n: int, wall: float, cpu: float, workers: int) -> float:
    return n / cpu if workers == 0 else n / wall / workers


def decode_limit(jpegs: list[bytes]) -> tuple[int, float, float, float]:
    """Every JPEG decoded whole by libjpeg-turbo (simplejpeg), bytes already in memory, nothing else."""
    wall, cpu = time.perf_counter(), time.process_time()
    for jpg in jpegs:
        simplejpeg.decode_jpeg(jpg, colorspace="RGB")
    return len(jpegs), time.perf_counter() - wall, time.process_time() - cpu, 0.0


def compare(shards: str, folder: str, kind: str, cfg: DataConfig, args: argparse.Namespace) -> dict:
    jpegs = [s.data for s in _samples(shards) if s.data is not None]
    sides = ["baseline", "ours"] + (["dali"] if args.dali else []) + ["decode_limit"]
    best = {side: 0.0 for side in sides}
    first: dict[str, list[float]] = {side: [] for side in sides}
    for r in range(args.rounds):  # alternate, so every side sees the same machine load
        for side in sides:
            if side == "baseline":
                n, wall, cpu, latency = timed(baseline_batches(folder, kind, args.workers, args.batch))
            elif side == "ours":
                n, wall, cpu, latency = timed(our_batches(shards, kind, cfg, args.batch, epoch=r))
            elif side == "dali":  # threads = workers: DALI's CPU stages run in its own thread pool
                n, wall, cpu, latency = dali_pipeline.timed(shards, kind, args.batch, max(args.workers, 1), len(jpegs))
            else:  # one process however many workers: the limit is per CPU-second
                n, wall, cpu, latency = decode_limit(jpegs)
            best[side] = max(best[side], n / cpu if side == "decode_limit" else per_worker(n, wall, cpu, args.workers))
            first[side].append(latency)
    figures: dict[str, object] = {f"{side}_img_s": round(best[side], 1) for side in sides}
    figures["ratio"] = round(best["ours"] / best["baseline"], 2)
    if args.dali:
        figures["ratio_vs_dali"] = round(best["ours"] / best["dali"], 2)
    figures["fraction_of_decode_limit"] = round(best["ours"] / best["decode_limit"], 2)
    figures["first_batch_s"] = {side: round(min(v), 2) for side, v in first.items() if side != "decode_limit"}
    return figures


class _MemoryProbe(TrainStream):
    """A TrainStream that, after its batches, yields the worker's (RSS at start, peak RSS) in bytes."""

    def __iter__(self):
        start = _status_kb("VmRSS")
        yield from super().__iter__()
        yield "memory", torch.tensor([start * 1024, _status_kb("VmHWM") * 1024])


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def worker_memory(shards: str, cfg: DataConfig, batch: int) -> dict:
    """One worker's RSS at start and at peak, with the formula's prediction of the difference."""
    split = load_manifest(shards).train
    mean_bytes = sum(os.path.getsize(u) for u in split.urls) / split.num_samples  # tar overhead included
    stream = _MemoryProbe(split, cfg, seed=0, epoch=0, start_step=0, steps=split.num_samples // batch,
                          local_batch=batch, rank=0, world_size=1)
    # a fresh (spawned) worker: a forked one would count pages it shares with this process
    loader = DataLoader(stream, batch_size=None, num_workers=1, multiprocessing_context="spawn")
    start, peak = next(b for b in loader if isinstance(b[0], str))[1].tolist()
    largest = max(h * w * 3 for h, w in (jpeg_size(s.data) for s in _samples(shards) if s.data))
    # a training reader cycles its shards, so the buffer always fills; ~20 MB: torch's and Python's working memory
    predicted = cfg.shuffle_buffer * mean_bytes + batch * cfg.image_size ** 2 * 3 + largest + 20 * 2**20
    return {"shuffle_buffer": cfg.shuffle_buffer, "worker_start_mb": round(start / 2**20),
            "worker_peak_mb": round(peak / 2**20), "added_mb": round((peak - start) / 2**20),
            "formula_mb": round(predicted / 2**20), "mean_sample_kb": round(mean_bytes / 1024, 1)}


def _line(name: str, kind: str, f: dict) -> str:
    dali = (f"DALI {f['dali_img_s']:7.1f}, ", f", / DALI {f['ratio_vs_dali']:.2f}") if "dali_img_s" in f else ("", "")
    return (f"{name:>16} {kind:>5}: baseline {f['baseline_img_s']:7.1f}, ours {f['ours_img_s']:7.1f}, {dali[0]}"
            f"decode limit {f['decode_limit_img_s']:7.1f} img/s per worker; ours / baseline {f['ratio']:.2f}{dali[1]}, "
            f"of the decode limit {f['fraction_of_decode_limit']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=SAMPLES, help="folder of photos")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for both sides (0: in-process)")
    parser.add_argument("--max-short-side", type=int, default=None,
                        help="also run on a copy re-encoded with this short side (data_prep --max-short-side)")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shuffle-buffer", type=int, default=1000)
    parser.add_argument("--decode", choices=("cpu", "gpu"), default="cpu",
                        help="ours with data.decode=gpu (nvJPEG on cuda; rates then include this process's GPU work)")
    parser.add_argument("--no-dali", dest="dali", action="store_false", help="leave out NVIDIA DALI's CPU pipeline")
    args = parser.parse_args()
    if args.dali and not dali_pipeline.available():
        print("NVIDIA DALI is not installed (pip install nvidia-dali-cuda120): its column is left out", flush=True)
        args.dali = False
    torch.set_num_threads(1)  # one core per worker process, on both sides
    random.seed(0)
    torch.manual_seed(0)
    cfg = DataConfig(workers=args.workers, shuffle_buffer=args.shuffle_buffer, prefetch=2, decode=args.decode)
    try:
        check_decode(cfg, torch.device("cuda"))
    except ConfigError as e:
        parser.error(str(e))
    result: dict = {"images": args.images, "workers": args.workers, "batch": args.batch, "rounds": args.rounds,
                    "decode": args.decode, "region_decode": jpeg.REGION_DECODE,
                    "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        src = stage(args.images, tmp)
        variants = [None] + ([args.max_short_side] if args.max_short_side else [])
        for side in variants:
            name = f"short_side_{side}" if side else "original"
            shards, folder = prepare(src, tmp, side)
            for kind in ("train", "eval"):
                figures = compare(shards, folder, kind, replace(cfg, root=shards), args)
                result[f"{name}_{kind}"] = figures
                print(_line(name, kind, figures), flush=True)
        last = result[f"{name}_train"]
        result.update(last)
        result["ratio_vs_original_baseline"] = round(last["ours_img_s"] / result["original_train"]["baseline_img_s"], 2)
        result["memory"] = [worker_memory(shards, replace(cfg, root=shards, shuffle_buffer=b), args.batch)
                            for b in (100, 2000)]
        for m in result["memory"]:
            print(f"worker memory, shuffle_buffer={m['shuffle_buffer']}: start {m['worker_start_mb']} MB, "
                  f"peak {m['worker_peak_mb']} MB (+{m['added_mb']} MB; formula +{m['formula_mb']} MB)", flush=True)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
