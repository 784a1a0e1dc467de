"""`python -m trainer.plot RUN_DIR`: training curves from RUN_DIR/metrics.jsonl as one PNG, no W&B needed.

Six panels against the optimizer step: loss (train and validation), learning rate, validation
top-1/top-5, throughput (images/s over all ranks), goodput, and where each epoch's time went
(trainer/monitoring/meters.py's buckets). A resume that logged some steps again
keeps the newest value for each step, as W&B draws them against `trainer/step`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402

from trainer.monitoring.meters import BUCKETS  # noqa: E402

PANELS = (  # (title, y label, [(metric, legend label)])
    ("loss", "cross-entropy", [("train/loss", "train"), ("val/loss", "validation")]),
    ("learning rate", "lr", [("train/lr", "lr")]),
    ("validation accuracy", "accuracy", [("val/top1", "top-1"), ("val/top5", "top-5")]),
    ("throughput", "images/s (all ranks)", [("perf/images_per_s", "images/s")]),
    ("goodput (training steps / wall time, per epoch)", "fraction", [("perf/goodput", "goodput")]),
    ("where each epoch's time went", "seconds",
     [(f"time/{bucket}_s", bucket) for bucket in BUCKETS]),
)


def read_series(path: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl -> {metric: [(step, value)]} sorted by step, the newest row winning per step."""
    latest: dict[str, dict[int, float]] = {}
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:  # the last line of a killed run may be torn
                continue
            for key, value in row.items():
                if key not in ("step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    latest.setdefault(key, {})[int(row["step"])] = float(value)
    return {key: sorted(points.items()) for key, points in latest.items()}


def plot(run_dir: Path, out: Path) -> Path:
    series = read_series(run_dir / "metrics.jsonl")
    fig, axes = plt.subplots(3, 2, figsize=(12, 12), constrained_layout=True)
    for ax, (title, ylabel, lines) in zip(axes.flat, PANELS):
        drawn = False
        for key, label in lines:
            points = series.get(key)
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, label=label, marker="o" if len(points) < 30 else None, markersize=3)
                drawn = True
        if drawn:
            ax.legend(loc="best")
        else:
            ax.text(0.5, 0.5, "not logged yet", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.grid(alpha=0.3)
    if series.get("train/lr"):
        axes[0, 1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    fig.suptitle(str(run_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run directory (holds metrics.jsonl)")
    parser.add_argument("--out", type=Path, help="PNG to write (default: RUN_DIR/curves.png)")
    args = parser.parse_args(argv)
    jsonl = args.run_dir / "metrics.jsonl"
    if not jsonl.is_file():
        parser.exit(2, f"error: {jsonl} does not exist: pass the run.dir of a training run\n")
    out = plot(args.run_dir, args.out or args.run_dir / "curves.png")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
