"""Checkpoints and manifests are data, not code: nothing read from them reaches a shell, opens a URL, or
names a file outside the dataset (docs/fault_tolerance.md, "Trusted and untrusted inputs").

Real `python -m trainer.export / trainer.evaluate / trainer` processes on a real checkpoint and real
shards (the in-process checks are in tests/unit/test_untrusted_inputs.py). Every malicious input would
create a marker file if it ran; the marker must stay absent and the refusal must name what was refused.
Every subprocess runs under a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.data.manifest import load_manifest

from helpers.common import ROOT, run_module
from helpers.datasets import poisoned_dataset
from helpers.resilience_procs import MODEL

TIMEOUT = 240  # seconds, per process; the slowest (export) takes ~15 s on an idle CPU


def run(*args: str) -> subprocess.CompletedProcess:
    """`python -m ...` as a user runs it, whatever its exit status (the tests check it)."""
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def train_args(root: str, run_dir: Path) -> list[str]:
    return ["trainer", "--config", str(ROOT / "configs" / "smoke_cpu.yaml"), f"data.root={root}",
            f"run.dir={run_dir}", "train.batch_size=8", "data.workers=0", "data.shuffle_buffer=16",
            "train.max_steps=2", "wandb.mode=disabled", *MODEL]


@pytest.fixture(scope="module")
def trained(shards: Path, tmp_path_factory) -> Path:
    """A real checkpoint of two training steps on the small model."""
    run_dir = tmp_path_factory.mktemp("trust") / "run"
    run_module(*train_args(str(shards), run_dir), timeout=TIMEOUT)
    return sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]


@pytest.fixture
def poisoned(trained: Path, shards: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The checkpoint, its stored data.root replaced by a command that touches a marker (then works)."""
    marker = tmp_path / "MARKER"
    state = torch.load(trained, map_location="cpu", weights_only=True)
    state["config"]["data"]["root"] = f"pipe:touch {marker}; cat {shards}"
    path = tmp_path / "sent-to-me.pt"
    torch.save(state, path)  # plain strings pass torch.load(weights_only=True)
    return path, marker


def test_export_never_runs_the_checkpoints_pipe_root(poisoned, shards: Path, tmp_path: Path):
    ckpt, marker = poisoned
    out = tmp_path / "export" / "model.pt"
    proc = run("trainer.export", "--checkpoint", str(ckpt), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    assert json.loads(out.with_suffix(".json").read_text())["class_names"] is None
    assert "not a plain local path" in proc.stderr and "--data-root" in proc.stderr
    # The command line is trusted: the same kind of root given there is read.
    proc = run("trainer.export", "--checkpoint", str(ckpt), "--out", str(out), "--data-root", f"pipe:cat {shards}")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    want = list(load_manifest(str(shards)).class_names)
    assert json.loads(out.with_suffix(".json").read_text())["class_names"] == want


def test_evaluate_refuses_the_checkpoints_pipe_root_and_takes_one_from_the_command_line(poisoned, shards: Path):
    ckpt, marker = poisoned
    proc = run("trainer.evaluate", "--checkpoint", str(ckpt))
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists()
    assert "untrusted" in proc.stderr and "data.root=" in proc.stderr and "pipe:touch" in proc.stderr
    # A normal pipe: root from the command line still reads every validation sample (names shell-quoted).
    proc = run("trainer.evaluate", "--checkpoint", str(ckpt), f"data.root=pipe:cat {shards}", "data.workers=0")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    assert json.loads(proc.stdout.strip().splitlines()[-1])["val/count"] == 12


@pytest.mark.parametrize("root_form, bad", [("pipe:cat {root}", "train/$(touch {marker}).tar"),
                                            ("{root}", "../../etc/passwd")], ids=["pipe", "plain"])
def test_training_on_a_poisoned_manifest_stops_before_reading_it(shards, tmp_path, root_form, bad):
    ds, marker, name = poisoned_dataset(shards, tmp_path, bad)
    proc = run(*train_args(root_form.format(root=ds), tmp_path / "run"))
    assert proc.returncode != 0
    assert not marker.exists()
    assert "_info.json" in proc.stderr and repr(name) in proc.stderr and "data_prep verify" in proc.stderr


