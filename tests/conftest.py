"""Shared fixtures: a small synthetic ImageNet-shaped dataset, prepared into shards by data_prep.

Everything is built here from scratch (real JPEG files, real tar shards), never from ../shared.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the tests' own helpers package, `helpers`

from helpers.common import (  # noqa: E402
    CLASSES,
    SHARD_SIZE,
    TRAIN_PER_CLASS,
    VAL_PER_CLASS,
    WIDE_CLASSES,
    run_module,
)

PROCESS_TESTS = Path(__file__).resolve().parent / "process"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/process/ starts real trainer or torchrun processes: the folder is the marker."""
    for item in items:
        if PROCESS_TESTS in Path(item.path).parents:
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No W&B settings of this machine; W&B's caches inside tmp_path."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
