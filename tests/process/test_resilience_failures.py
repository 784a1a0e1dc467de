"""Failures that must stop a real 2-process torchrun run cleanly: a non-finite loss (every rank stops
at the same step, no checkpoint after it) and a rank that hangs (a clear error after run.timeout_minutes).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from helpers.resilience_procs import Run, checkpoint_steps, load, logged_steps, past_step, torchrun

pytestmark = pytest.mark.timeout(300)


def test_nonfinite_loss_stops_all_ranks_at_the_same_step_and_keeps_the_last_good_checkpoint(
        shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    # lr=1e38 makes the weights inf/NaN after the first update, so the second loss is not finite.
    run = Run(torchrun(shards, run_dir, "optim.lr=1.0e+38", "checkpoint.every_steps=1", "data.workers=0"),
              tmp_path / "run.log")
    assert run.finish() == 1
    log = run.text()
    assert len(re.findall(r"exitcode\s*: 3 ", log)) == 2, log[-3000:]  # EXIT_NONFINITE on both ranks
    stops = dict(re.findall(r"rank (\d): non-finite loss \(inf/NaN\) at step (\d+)", log))
    assert set(stops) == {"0", "1"} and len(set(stops.values())) == 1, f"ranks disagree: {stops}"
    step = int(stops["0"])
    assert step == 2
    # Nothing was saved or logged from the non-finite step on; the last checkpoint holds finite weights.
    assert checkpoint_steps(run_dir) == [step - 1] and max(logged_steps(run_dir)) == step - 1
    last = run_dir / "checkpoints" / f"step-{step - 1:09d}.pt"
    assert f"the newest checkpoint, {last}, is the last good state" in log
    assert all(torch.isfinite(t).all() for t in load(last)["model"].values() if t.is_floating_point())


def test_a_hung_rank_becomes_a_clear_error_after_the_timeout(shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    run = Run(torchrun(shards, run_dir, "run.timeout_minutes=0.1", "data.workers=0", "train.epochs=6"),
              tmp_path / "run.log")
    run.wait_until("step 2", past_step(run_dir, 2))
    hung = run.rank_pids()[1]
    os.kill(hung, signal.SIGSTOP)  # rank 1 stops answering, mid-epoch, as a wedged process would
    stopped_at = time.monotonic()
    try:
        run.wait_until("rank 0's timeout error", lambda: "rank 0 stops: a collective timed out" in run.text(), 90)
        waited = time.monotonic() - stopped_at
    finally:
        os.kill(hung, signal.SIGCONT)  # lets it see that rank 0 is gone, instead of waiting for SIGKILL
    assert run.finish() == 1
    log = run.text()
    assert 5 <= waited < 60, f"the error came after {waited:.1f} s, with run.timeout_minutes=0.1 (6 s)"
    assert "run.timeout_minutes=0.1" in log and re.search(r"rank\s*: 0 .*\n\s*exitcode\s*: 4 ", log), log[-3000:]
