"""W&B loses nothing that metrics.jsonl has: a SIGKILLed run's lost W&B rows are logged again on resume.

wandb-core writes its transaction log (`run-<id>.wandb`) in bursts (`x_transaction_log_flush_interval`,
15 s by default), so a kill loses what it had not written yet. The end-to-end test makes that window
cover the whole first start (WANDB__TRANSACTION_LOG_FLUSH_INTERVAL), so the loss is certain, not timing.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from pathlib import Path

from trainer.monitoring import wandb_history
from trainer.monitoring.loggers import JsonlLogger

from helpers.resilience_procs import Run, logged_steps, trainer_args
from helpers.wandb_records import history


def test_a_sigkilled_run_loses_no_wandb_row_on_resume(shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, *trainer_args(shards, run_dir, "wandb.mode=offline", "checkpoint.every_steps=3",
                                         "data.workers=1")]  # 2 epochs of 6 steps, a log row per step
    env = {"WANDB_DATA_DIR": str(tmp_path / "wandb-data"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    # The first start: wandb-core's write burst window spans all of it, then a node-failure kill at step 4
    # (past the step-3 checkpoint, two steps before the next one).
    first = Run(cmd, tmp_path / "first.log", WANDB__TRANSACTION_LOG_FLUSH_INTERVAL="600", **env)
    try:
        first.wait_until("a log row at step 4", lambda: max(logged_steps(run_dir), default=0) >= 4)
    finally:
        cores = wandb_core_pids(first.proc.pid)
        for pid in cores:  # W&B's service runs in a session of its own: killed with the trainer
            os.killpg(pid, signal.SIGKILL)
        first.kill()
    assert cores, "no wandb-core process found for the first start"
    (killed,) = run_dir.glob("wandb/offline-run-*")
    lost = Counter(rows_of(JsonlLogger.rows(run_dir / "metrics.jsonl"))) - Counter(wandb_rows([killed]))
    assert lost, "the kill lost no W&B row: this test would prove nothing"

    resumed = Run(cmd, tmp_path / "resumed.log", **env)  # the same command: resumes from the step-3 checkpoint
    assert resumed.finish(timeout=240) == 0, resumed.text()[-4000:]
    assert "resumed from" in resumed.text() and "step-000000003.pt" in resumed.text()

    # W&B now holds every row of metrics.jsonl, as often as metrics.jsonl has it: the rows the kill lost,
    # and step 4 twice (logged before the kill and again after the resume from step 3), same values.
    segments = sorted(run_dir.glob("wandb/offline-run-*"))
    assert len(segments) == 2
    local = JsonlLogger.rows(run_dir / "metrics.jsonl")
    assert Counter(wandb_rows(segments)) == Counter(rows_of(local))
    train = [step for step, row in local if "train/loss" in row]
    assert sorted(set(train)) == list(range(1, 13)) and train.count(4) == 2
    steps = [r["_step"] for seg in segments for r in history(next(seg.glob("run-*.wandb")))]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # W&B's own axis only goes forward

    # A further start would log nothing again: W&B's files hold every row of metrics.jsonl (and the grids).
    from trainer.monitoring.wandb_history import held_rows
    from trainer.monitoring.wandb_history import signature as _signature

    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert not Counter(_signature(step, row) for step, row in local) - held_rows(run_dir / "wandb", run_id)


def rows_of(rows: list[tuple[int, dict]]) -> list[tuple]:
    """Rows as hashable values; numbers compare by value (W&B writes a whole float 1.0 as 1)."""
    return [(step, frozenset(row.items())) for step, row in rows]


def wandb_rows(segments: list[Path]) -> list[tuple]:
    """The metric rows (not the sample grid) of offline W&B run directories, like `rows_of`."""
    out = []
    for segment in segments:
        for row in history(next(segment.glob("run-*.wandb"))):
            if not any(k.startswith("train/samples") for k in row):
                step = row.pop("trainer/step")
                out.append((step, frozenset(wandb_history.metrics_of(row).items())))
    return out


def wandb_core_pids(parent: int) -> list[int]:
    """The W&B service processes started for process `parent` (`wandb-core ... --pid <parent>`)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if argv and argv[0].endswith(b"wandb-core") and b"--pid" in argv and \
                argv[argv.index(b"--pid") + 1:][:1] == [str(parent).encode()]:
            found.append(int(entry.name))
    return found
