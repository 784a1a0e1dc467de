"""Where the time goes, and checkpoints written in the background, on real one-process runs.

A SIGKILL while a background checkpoint is being written resumes from the previous one and ends bitwise
equal to an uninterrupted run; a stop request with a save in flight exits only once both saves are
durable; the time buckets of every epoch add up to its wall time, and the epochs' wall times to the
process's. checkpoint.DELAY_ENV holds a save between its temp file and the rename, so that a test can
act while it is in flight.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from trainer.monitoring.meters import BUCKETS
from trainer.resilience.checkpoint import DELAY_ENV

from helpers.resilience_procs import Run, assert_bitwise_equal, checkpoint_steps, load, trainer_args

pytestmark = pytest.mark.timeout(300)

FINAL = 12  # 2 epochs of 6 steps


def command(shards: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, *trainer_args(shards, run_dir, "checkpoint.every_steps=2", *overrides)]


def tmp_file(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:09d}.pt.tmp"


@pytest.fixture(scope="module")
def reference(shards: Path, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run = Run(command(shards, run_dir), run_dir.parent / "run.log")
    assert run.finish() == 0, run.text()[-3000:]
    return run_dir


def test_sigkill_during_a_background_write_resumes_from_the_previous_checkpoint(shards: Path, tmp_path: Path,
                                                                               reference: Path):
    run_dir = tmp_path / "run"
    run = Run(command(shards, run_dir), tmp_path / "first.log", **{DELAY_ENV: "0.5"})
    run.wait_until("the step-4 checkpoint in flight", lambda: tmp_file(run_dir, 4).exists() and
                   2 in checkpoint_steps(run_dir))
    run.kill()
    assert 4 not in checkpoint_steps(run_dir)

    run = Run(command(shards, run_dir), tmp_path / "second.log")
    assert run.finish() == 0, run.text()[-3000:]
    assert f"resumed from {run_dir / 'checkpoints'}/step-000000002.pt at step 2" in run.text()
    name = f"step-{FINAL:09d}.pt"
    assert_bitwise_equal(load(run_dir / "checkpoints" / name), load(reference / "checkpoints" / name))


def test_a_stop_with_a_save_in_flight_exits_only_once_it_is_durable(shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    delay = 3.0
    run = Run(command(shards, run_dir), tmp_path / "run.log", **{DELAY_ENV: str(delay)})
    run.wait_until("the step-2 checkpoint in flight", tmp_file(run_dir, 2).exists)
    signalled = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 75, run.text()[-3000:]
    took = time.monotonic() - signalled
    stop = int(run.text().split("stopped by a signal at step ", 1)[1].split(",", 1)[0])
    assert checkpoint_steps(run_dir) == [2, stop] and stop > 2
    assert all(load(run_dir / "checkpoints" / f"step-{s:09d}.pt")["step"] == s for s in (2, stop))
    assert took >= delay  # it waited for the saves in flight (each held for `delay` s) before exiting


def test_time_buckets_add_up_to_the_wall_time(shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    started = time.monotonic()
    run = Run(command(shards, run_dir, "train.epochs=3"), tmp_path / "run.log")
    assert run.finish() == 0, run.text()[-3000:]
    lifetime = time.monotonic() - started
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in rows if "time/wall_s" in r]
    assert [r["step"] for r in windows] == [6, 12, 18]  # one per epoch
    for w in windows:
        parts = sum(w[f"time/{b}_s"] for b in BUCKETS)
        assert parts == pytest.approx(w["time/wall_s"], rel=1e-6), w
        assert w["perf/goodput"] == pytest.approx(w["time/step_s"] / w["time/wall_s"])
        assert w["time/step_s"] > 0 and w["time/validation_s"] > 0
    assert windows[0]["time/startup_s"] > 0 and all(w["time/startup_s"] == 0 for w in windows[1:])
    accounted = sum(w["time/wall_s"] for w in windows)
    assert abs(accounted - lifetime) < 0.05 * lifetime, (accounted, lifetime)
    assert "where the time went" in run.text()
