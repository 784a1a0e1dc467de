"""End to end on the CPU: real torchrun processes on gloo, real shards, real offline W&B files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import CLASSES, ROOT, TRAIN_PER_CLASS, VAL_PER_CLASS
from wandb_records import history, run_ids

TRAIN_IMAGES, VAL_IMAGES = CLASSES * TRAIN_PER_CLASS, CLASSES * VAL_PER_CLASS
BATCH = 8
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH


def torchrun(shards: Path, run_dir: Path, *overrides: str, nproc: int = 2) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "trainer", "--config", str(ROOT / "configs" / "smoke_cpu.yaml"),
        f"data.root={shards}", f"run.dir={run_dir}", f"train.batch_size={BATCH}", "data.workers=2",
        "data.shuffle_buffer=16", *overrides,
    ]


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def wandb_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def test_two_process_run_trains_validates_and_logs(shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    run(torchrun(shards, run_dir, "train.epochs=1"))
    rows = metrics(run_dir)

    # Both ranks took the same number of batches (the loop gathers and compares them) ...
    assert [r["train/epoch_batches"] for r in rows if "train/epoch_batches" in r] == [STEPS_PER_EPOCH]
    # ... and validation counted every validation image exactly once across the two ranks.
    val = [r for r in rows if "val/count" in r]
    assert [r["val/count"] for r in val] == [VAL_IMAGES]
    assert 0 <= val[0]["val/top1"] <= val[0]["val/top5"] <= 1
    train = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train] == list(range(2, STEPS_PER_EPOCH + 1, 2))

    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["best.pt", f"step-{STEPS_PER_EPOCH:09d}.pt"]
    state = torch.load(run_dir / "checkpoints" / ckpts[-1], weights_only=True)
    assert (state["step"], state["epoch"], state["step_in_epoch"]) == (STEPS_PER_EPOCH, 1, 0)
    assert (run_dir / "config.yaml").is_file()

    # The offline W&B run file holds the same training losses, at the same steps.
    (wandb_file,) = wandb_files(run_dir)
    logged = {r["trainer/step"]: r["train/loss"] for r in history(wandb_file) if "train/loss" in r}
    assert logged == {r["step"]: r["train/loss"] for r in train}
    assert run_ids(wandb_file) == {state["wandb_run_id"]}


def test_run_stopped_after_first_epoch_resumes_with_the_same_command(shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    cmd = torchrun(shards, run_dir, "train.epochs=2")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    epoch_ckpt = run_dir / "checkpoints" / f"step-{STEPS_PER_EPOCH:09d}.pt"
    deadline = time.monotonic() + 180
    while not epoch_ckpt.exists():
        assert first.poll() is None, f"run ended before its first checkpoint:\n{first.stderr.read()[-4000:]}"
        assert time.monotonic() < deadline, "no checkpoint after the first epoch within 180 s"
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGTERM)  # the torchrun agent, as a scheduler would
    first.communicate(timeout=120)
    before = metrics(run_dir)
    stopped_at = max(r["step"] for r in before)
    assert STEPS_PER_EPOCH <= stopped_at < 2 * STEPS_PER_EPOCH, "the run was not interrupted in epoch 2"

    out = run(cmd)
    assert f"resumed from {run_dir / 'checkpoints'}" in out.stderr
    after = metrics(run_dir)[len(before):]
    resumed_steps = [r["step"] for r in after if "train/loss" in r]
    assert resumed_steps and min(resumed_steps) > stopped_at, "steps were repeated after the resume"
    assert max(r["step"] for r in after) == 2 * STEPS_PER_EPOCH
    assert [r["val/count"] for r in metrics(run_dir) if "val/count" in r] == [VAL_IMAGES, VAL_IMAGES]
    final = torch.load(run_dir / "checkpoints" / f"step-{2 * STEPS_PER_EPOCH:09d}.pt", weights_only=True)
    assert (final["epoch"], final["step_in_epoch"]) == (2, 0)

    # Both processes wrote to the same W&B run, and its steps never went backwards.
    files = wandb_files(run_dir)
    assert len(files) == 2 and set().union(*map(run_ids, files)) == {final["wandb_run_id"]}
    steps = [r["trainer/step"] for f in files for r in history(f) if "train/loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
