"""What many tests share: the project root, the fixture dataset's shape, and `run_module`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The `shards` fixture: 4 classes, 48 train and 12 val images: 6 train shards of 8, 2 val shards of 6.
CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, SHARD_SIZE = 4, 12, 3, 8
WIDE_CLASSES = 8  # `wide_shards`: more than 5, so that top-5 can be told from "always right"


def run_module(*args: str, cwd: Path = ROOT, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m ...` the way a user would; fail the test with its output when it fails."""
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc
