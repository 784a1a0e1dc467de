"""Goodput: where a short multi-epoch CPU training run spends its wall clock, before and after, side by side.

    python -m bench.goodput [--epochs 4] [--compile]
    python -m bench.goodput --boundary [--epochs 4]   # the epoch boundary of an AlexNet-sized proxy

A proxy whose steps are fast (a torchvision ResNet-18 at 32 px on synthetic shards, validation at
ImageNet's 1:25 ratio to train) runs twice in one invocation, as real `python -m trainer` processes:
"before" with the behaviour the trainer had before time accounting (synchronous checkpoints, training
DataLoader workers started anew every epoch) and "after" with the defaults. Both runs' time buckets
(trainer/monitoring/meters.py, read back from metrics.jsonl) are printed side by side. With --compile it also
starts a model.compile=true run twice: "before" as a job requeued onto a node with an empty compile
cache (each start gets a fresh TORCHINDUCTOR_CACHE_DIR), "after" with the cache kept under run.dir.
The last line is JSON: goodput_before, goodput_after, the per-bucket seconds and the goals' ratios.

--boundary runs one AlexNet-sized proxy instead (torchvision's AlexNet at 64 px: 57 M parameters, ~456 MB
checkpoints with momentum; 2 workers, one process) and reports each epoch boundary, from an epoch's last
training step to the next epoch's first with validation included, in median steps (goal: <= 4).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trainer.monitoring.meters import BUCKETS

ROOT = Path(__file__).resolve().parent.parent
BEFORE = ["checkpoint.async_save=false", "data.persistent_workers=false"]
PROXY = ["model.name=torchvision:resnet18", "data.image_size=32", "data.eval_resize=36", "train.batch_size=32",
         "data.workers=2", "data.shuffle_buffer=500", "train.log_every=10", "wandb.mode=disabled", "device=cpu",
         "schedule.name=constant", "optim.lr=0.01"]


def make_dataset(out: Path, classes: int = 10, train_per_class: int = 100) -> Path:
    """Synthetic shards; validation at ImageNet's 1:25 ratio (40 images for 1,000)."""
    images, shards = out / "images", out / "shards"
    run(["data_prep", "synthetic", "--out", str(images), "--classes", str(classes),
         "--train-per-class", str(train_per_class), "--val-per-class", str(max(1, train_per_class // 25))])
    run(["data_prep", "folder", "--train", str(images / "train"), "--val", str(images / "val"),
         "--out", str(shards), "--shard-size", "100", "--no-progress"])
    return shards


def run(args: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.monotonic() - t0


def train(shards: Path, run_dir: Path, *overrides: str, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run the trainer; the sums of this start's per-epoch time windows (and the epoch gaps) from metrics.jsonl."""
    jsonl = run_dir / "metrics.jsonl"
    before = len(jsonl.read_text().splitlines()) if jsonl.exists() else 0  # a restart appends to the file
    run(["trainer", "--config", str(ROOT / "configs" / "smoke_cpu.yaml"), f"data.root={shards}",
         f"run.dir={run_dir}", *PROXY, *overrides], env)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()[before:]]
    windows = [r for r in rows if "time/wall_s" in r]
    keys = [f"time/{b}_s" for b in BUCKETS] + ["time/wall_s", "time/epoch_gap_s"]
    out = {k: sum(w[k] for w in windows) for k in keys}
    out["goodput"] = out["time/step_s"] / out["time/wall_s"]
    # Per epoch (one save each): the first save of a start also allocates its host buffers.
    out["median_checkpoint_s"] = statistics.median(w["time/checkpoint_s"] for w in windows)
    out["median_epoch_gap_s"] = statistics.median(w["time/epoch_gap_s"] for w in windows[1:] or windows)
    return out


ALEXNET_PROXY = ["model.name=torchvision:alexnet", "data.image_size=64", "data.eval_resize=73", "train.batch_size=32",
                 "data.workers=2", "data.shuffle_buffer=500", "train.log_every=1", "wandb.mode=disabled",
                 "device=cpu", "schedule.name=constant", "optim.lr=0.001"]


def boundary(shards: Path, run_dir: Path, epochs: int) -> dict[str, Any]:
    """Each epoch boundary (gap + validation) of the AlexNet proxy, in seconds and in median steps."""
    run(["trainer", "--config", str(ROOT / "configs" / "smoke_cpu.yaml"), f"data.root={shards}",
         f"run.dir={run_dir}", *ALEXNET_PROXY, f"train.epochs={epochs}"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in rows if "time/wall_s" in r]
    step = statistics.median(r["perf/step_time_s"] for r in rows if "perf/step_time_s" in r)
    # The gap before epoch e+1's first step is logged with epoch e+1's window; validation with epoch e's.
    pairs = list(zip(windows, windows[1:]))
    gaps = [after["time/epoch_gap_s"] + before["time/validation_s"] for before, after in pairs]
    return {"median_step_s": step, "boundaries_s": gaps, "boundaries_in_steps": [g / step for g in gaps],
            "median_boundary_in_steps": statistics.median(g / step for g in gaps),
            "validation_s": [before["time/validation_s"] for before, _ in pairs],
            "checkpoint_s": [before["time/checkpoint_s"] for before, _ in pairs],
            "gap_without_validation_s": [after["time/epoch_gap_s"] for _, after in pairs]}


def table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    lines = [f"{'seconds':<18}" + "".join(f"{n:>12}" for n in names)]
    for key in [f"time/{b}_s" for b in BUCKETS] + ["time/wall_s", "time/epoch_gap_s", "goodput",
                                                   "median_checkpoint_s", "median_epoch_gap_s"]:
        lines.append(f"{key:<18}" + "".join(f"{results[n][key]:>12.3f}" for n in names))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--compile", action="store_true", help="also measure compile time on a restart")
    ap.add_argument("--boundary", action="store_true", help="the epoch boundary of the AlexNet proxy, in steps")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shards = make_dataset(work / "data")
        if args.boundary:
            result = boundary(shards, work / "alexnet", args.epochs)
            print(" ".join(f"{b:.2f}" for b in result["boundaries_in_steps"]), "median steps per boundary",
                  f"(median step {result['median_step_s']:.3f} s)")
            print(json.dumps(result))
            return
        epochs = f"train.epochs={args.epochs}"
        results = {"before": train(shards, work / "before", epochs, *BEFORE),
                   "after": train(shards, work / "after", epochs)}
        print(table(results))
        before, after = results["before"], results["after"]
        # The blocking part of one checkpoint: per epoch, since each epoch saves once.
        summary = {
            "goodput_before": before["goodput"], "goodput_after": after["goodput"],
            "buckets_before": {b: before[f"time/{b}_s"] for b in BUCKETS},
            "buckets_after": {b: after[f"time/{b}_s"] for b in BUCKETS},
            "epoch_gap_ratio": after["time/epoch_gap_s"] / max(before["time/epoch_gap_s"], 1e-9),
            "checkpoint_block_ratio": after["time/checkpoint_s"] / max(before["time/checkpoint_s"], 1e-9),
            "median_epoch_gap_ratio": after["median_epoch_gap_s"] / max(before["median_epoch_gap_s"], 1e-9),
            "median_checkpoint_block_ratio": after["median_checkpoint_s"] / max(before["median_checkpoint_s"], 1e-9),
        }
        if args.compile:
            compiled = ["model.compile=true", "train.max_steps=3"]
            first = train(shards, work / "compile-after", *compiled)
            again = train(shards, work / "compile-after", *compiled, "train.max_steps=6")
            cold = [train(shards, work / f"compile-before-{i}", *compiled,
                          env={"TORCHINDUCTOR_CACHE_DIR": str(work / f"empty-cache-{i}")}) for i in range(2)]
            print(f"compile: first start {first['time/compile_s']:.1f} s, restart with the run's cache "
                  f"{again['time/compile_s']:.1f} s; restarts with an empty cache {cold[0]['time/compile_s']:.1f} s "
                  f"and {cold[1]['time/compile_s']:.1f} s")
            summary.update(compile_first_s=first["time/compile_s"], compile_restart_s=again["time/compile_s"],
                           compile_cold_restart_s=cold[1]["time/compile_s"],
                           compile_restart_ratio=again["time/compile_s"] / max(first["time/compile_s"], 1e-9))
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
