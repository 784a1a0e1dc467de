"""Shared fixtures: a small synthetic ImageNet-shaped dataset, prepared into shards by data_prep.

Everything is built here from scratch (real JPEG files, real tar shards), never from ../shared.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests' own helpers (wandb_records)

# 4 classes, 48 train and 12 val images: 6 train shards of 8, 2 val shards of 6.
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, SHARD_SIZE = 4, 12, 3, 8


def run_module(*args: str, cwd: Path = ROOT, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m ...` the way a user would; fail the test with its output when it fails."""
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def synthetic_images(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    run_module("data_prep", "synthetic", "--out", str(out), "--classes", str(CLASSES),
               "--train-per-class", str(TRAIN_PER_CLASS), "--val-per-class", str(VAL_PER_CLASS))
    return out


@pytest.fixture(scope="session")
def shards(synthetic_images, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    run_module("data_prep", "folder", "--train", str(synthetic_images / "train"),
               "--val", str(synthetic_images / "val"), "--out", str(out), "--shard-size", str(SHARD_SIZE))
    return out


WIDE_CLASSES = 8  # more than 5, so that top-5 can be told from "always right"


@pytest.fixture(scope="session")
def wide_shards(tmp_path_factory) -> Path:
    """8 classes, 2 train and 3 val images each: for checks that need more classes than top-5 covers."""
    images = tmp_path_factory.mktemp("wide-synthetic")
    run_module("data_prep", "synthetic", "--out", str(images), "--classes", str(WIDE_CLASSES),
               "--train-per-class", "2", "--val-per-class", "3")
    out = tmp_path_factory.mktemp("wide-shards")
    run_module("data_prep", "folder", "--train", str(images / "train"), "--val", str(images / "val"),
               "--out", str(out), "--shard-size", str(SHARD_SIZE), "--no-progress")
    return out
