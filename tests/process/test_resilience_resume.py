"""Kill a real 2-process torchrun run at several points and resume it: the final weights must be
bitwise equal to an uninterrupted run's. SIGTERM to one rank, SIGKILL of one rank under --max-restarts,
SIGUSR1 to torchrun, SIGKILL of everything, a damaged newest checkpoint, and a world-size change.

The dataset has 48 images: 6 steps per epoch at a global batch of 8, 2 epochs, 2 ranks x 2 workers.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.resilience_procs import (
    Run,
    assert_bitwise_equal,
    checkpoint_steps,
    load,
    logged_steps,
    past_step,
    torchrun,
    trainer_args,
)

pytestmark = pytest.mark.timeout(420)

STEPS_PER_EPOCH, EPOCHS = 6, 2
FINAL = STEPS_PER_EPOCH * EPOCHS
EVERY = "checkpoint.every_steps=2"
SIGNALS = ("--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",)  # torchrun forwards SIGUSR1 too


@pytest.fixture(scope="module")
def reference(shards: Path, tmp_path_factory) -> Path:
    """The uninterrupted run, with the same world size, workers and checkpoint cadence."""
    run_dir = tmp_path_factory.mktemp("reference")
    run = Run(torchrun(shards, run_dir, EVERY), run_dir.parent / "reference.log")
    assert run.finish() == 0, run.text()[-4000:]
    return run_dir


def test_uninterrupted_run_keeps_the_last_two_and_the_best(reference: Path):
    ckpt = reference / "checkpoints"
    assert checkpoint_steps(reference) == [FINAL - 2, FINAL]  # checkpoint.keep_last=2
    final = load(ckpt / f"step-{FINAL:09d}.pt")
    assert (final["epoch"], final["step_in_epoch"]) == (EPOCHS, 0)
    assert final["data"]["world_size"] == 2 and final["data"]["workers"] == 2
    # best.pt is the epoch-end checkpoint with the highest val/top1 (the earlier one on a tie).
    best = load(ckpt / "best.pt")
    assert best["step"] % STEPS_PER_EPOCH == 0 and best["val"]["val/count"] == 12
    assert best["val"]["val/top1"] == final["best_val_top1"] >= final["val"]["val/top1"]
    assert best["step"] in (STEPS_PER_EPOCH, FINAL)


@pytest.fixture(scope="module")
def interrupted(shards: Path, tmp_path_factory) -> dict:
    """One run interrupted four times, then finished: its directory, logs and a mid-epoch snapshot."""
    run_dir = tmp_path_factory.mktemp("interrupted")
    cmd = torchrun(shards, run_dir, EVERY, launcher=SIGNALS)
    out: dict = {"dir": run_dir, "logs": []}

    # 1. SIGTERM to one rank only, early in epoch 0: every rank agrees at the next step and saves.
    run = Run(cmd, run_dir.parent / "interrupted-1.log")
    run.wait_until("step 1", past_step(run_dir, 1))
    rank1 = run.rank_pids()[1]
    seen = max(logged_steps(run_dir))
    os.kill(rank1, signal.SIGTERM)
    t0 = time.monotonic()
    out["rc1"], out["stop1_s"] = run.finish(), time.monotonic() - t0
    out["seen1"], out["saved1"] = seen, checkpoint_steps(run_dir)[-1]
    out["logs"].append(run.text())
    out["snapshot"] = run_dir.parent / "mid-epoch-snapshot"
    shutil.copytree(run_dir / "checkpoints", out["snapshot"])

    # 2. Resume under --max-restarts=1; SIGKILL one rank mid-epoch 0: torchrun restarts the group, which
    #    resumes by itself. Then SIGUSR1 to torchrun in epoch 1 (SLURM's time-limit signal), forwarded.
    run = Run(torchrun(shards, run_dir, EVERY, launcher=(*SIGNALS, "--max-restarts=1")),
              run_dir.parent / "interrupted-2.log", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")  # see dist.py
    run.wait_until("the step-4 checkpoint", lambda: 4 in checkpoint_steps(run_dir))
    os.kill(run.rank_pids()[1], signal.SIGKILL)
    run.wait_until("step 8 after the restart", past_step(run_dir, 8))
    run.proc.send_signal(signal.SIGUSR1)
    out["rc2"], out["saved2"] = run.finish(), checkpoint_steps(run_dir)[-1]
    out["logs"].append(run.text())

    # 3. Resume; SIGKILL everything (torchrun, ranks, workers) once the step-10 checkpoint exists,
    #    then damage the newest checkpoint as a crash during a write-back might.
    run = Run(cmd, run_dir.parent / "interrupted-3.log")
    run.wait_until("the step-10 checkpoint", lambda: 10 in checkpoint_steps(run_dir))
    run.kill()
    out["logs"].append(run.text())
    newest = run_dir / "checkpoints" / f"step-{checkpoint_steps(run_dir)[-1]:09d}.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    out["truncated"] = newest

    # 4. Resume to the end.
    run = Run(cmd, run_dir.parent / "interrupted-4.log")
    out["rc4"] = run.finish()
    out["logs"].append(run.text())
    return out


def _stops(log: str) -> dict[int, int]:
    """{rank: step} from each rank's "stopped by a signal at step N" line."""
    return {int(r): int(s) for r, s in re.findall(r"rank (\d): stopped by a signal at step (\d+)", log)}


def test_stop_signal_to_one_rank_saves_at_the_next_step(interrupted: dict):
    log = interrupted["logs"][0]
    # Each rank exited with EXIT_PREEMPTED (75); torchrun itself reports a failure (1).
    assert interrupted["rc1"] == 1 and len(re.findall(r"exitcode\s*: 75 ", log)) == 2, log[-3000:]
    stopped = _stops(log)
    assert set(stopped) == {0, 1} and len(set(stopped.values())) == 1, "ranks did not agree on the step"
    step = stopped[0]
    assert step == interrupted["saved1"]  # the checkpoint is the step they agreed on
    assert interrupted["seen1"] < step <= interrupted["seen1"] + 2 < STEPS_PER_EPOCH  # the next step, mid-epoch
    assert interrupted["stop1_s"] < 25  # well inside torchrun's 30 s before SIGKILL


def test_killed_rank_is_restarted_by_torchrun_and_resumes_by_itself(interrupted: dict):
    log = interrupted["logs"][1]
    resumed = re.findall(r"resumed from \S+/step-(\d+)\.pt at step (\d+) \(epoch (\d)", log)
    assert len(resumed) == 2, log[-4000:]  # the launch, then torchrun's restart of the group
    assert int(resumed[0][0]) == interrupted["saved1"]
    assert int(resumed[1][0]) >= 4 and resumed[1][2] == "0"  # mid-epoch 0, from the newest checkpoint


def test_sigusr1_to_torchrun_saves_mid_epoch(interrupted: dict):
    log = interrupted["logs"][1]
    assert interrupted["rc2"] == 1 and "Received 10 death signal" in log, log[-3000:]
    stopped = _stops(log)
    assert set(stopped) == {0, 1} and len(set(stopped.values())) == 1, "ranks did not agree on the step"
    assert STEPS_PER_EPOCH < interrupted["saved2"] == stopped[0] < FINAL


def test_damaged_newest_checkpoint_falls_back_to_the_previous(interrupted: dict):
    log = interrupted["logs"][3]
    assert ("skipping damaged checkpoint, falling back to the one before it: "
            f"checkpoint {interrupted['truncated']} is truncated") in log
    previous = re.search(r"resumed from \S+/step-(\d+)\.pt", log)
    assert previous and int(previous.group(1)) < int(interrupted["truncated"].name[5:14])


def test_interrupted_run_ends_bitwise_equal_to_the_uninterrupted_one(interrupted: dict, reference: Path):
    assert interrupted["rc4"] == 0, interrupted["logs"][3][-4000:]
    name = f"step-{FINAL:09d}.pt"
    assert_bitwise_equal(load(interrupted["dir"] / "checkpoints" / name), load(reference / "checkpoints" / name))


def test_world_size_change_continues_at_the_next_epoch_with_a_warning(shards: Path, tmp_path: Path,
                                                                      interrupted: dict):
    """A 2-rank mid-epoch checkpoint resumed by 1 process: same global batch, next epoch, warned.
    This run also saves by time (checkpoint.every_minutes, 6 ms here: after every step)."""
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted["snapshot"], run_dir / "checkpoints")
    saved = interrupted["saved1"]
    run = Run([sys.executable, *trainer_args(shards, run_dir, EVERY, "checkpoint.every_minutes=0.0001")],
              tmp_path / "run.log")
    assert run.finish() == 0, run.text()[-4000:]
    log = run.text()
    assert ("was written under another data plan (world_size 2 -> 1)" in log
            and f"the rest of epoch 0 (from batch {saved}) cannot be replayed" in log
            and "continues at the start of epoch 1" in log), log[-3000:]
    resumed = f"resumed from {run_dir / 'checkpoints'}/step-{saved:09d}.pt"
    assert f"{resumed} at step {STEPS_PER_EPOCH} (epoch 1, batch 0)" in log  # step realigned to the epoch
    steps = logged_steps(run_dir)
    assert steps == list(range(STEPS_PER_EPOCH + 1, FINAL + 1))  # epoch 1 in full, 8 images a step on 1 rank
    final = load(run_dir / "checkpoints" / f"step-{FINAL:09d}.pt")
    assert final["data"]["world_size"] == 1 and final["data"]["batch_size"] == 8
    assert (final["epoch"], final["step_in_epoch"], final["val"]["val/count"]) == (EPOCHS, 0, 12)
    by_time = [int(n) for n in re.findall(r"saved checkpoint \S+/step-(\d+)\.pt\n", log)]
    assert {7, 9, 11} <= set(by_time)  # odd steps: not checkpoint.every_steps=2, so the clock's doing


# Every recipe option that draws randomly or keeps state, at once: LARS (momentum), the linear scaling rule
# with a poly schedule and warmup, 2 micro-batches per step, the EMA, Mixup/CutMix with label smoothing,
# TrivialAugment and random erasing.
RECIPE = ("optim.name=lars", "optim.lr=0.2", "optim.lr_base_batch=4", "schedule.name=poly",
          "schedule.warmup_epochs=0.5", "train.accum_steps=2", "train.ema_decay=0.9", "mix.mixup_alpha=0.8",
          "mix.cutmix_alpha=1.0", "train.label_smoothing=0.1", "data.auto_augment=trivialaugment",
          "data.random_erasing=0.5", EVERY)


def test_every_recipe_option_at_once_resumes_bitwise_after_a_stop_and_a_sigkill(shards: Path, tmp_path: Path):
    reference = tmp_path / "reference"
    run = Run(torchrun(shards, reference, *RECIPE), tmp_path / "reference.log")
    assert run.finish() == 0, run.text()[-4000:]

    run_dir = tmp_path / "interrupted"
    # SIGTERM to one rank in epoch 0: all ranks save at the next step boundary (an accumulation finishes first)
    run = Run(torchrun(shards, run_dir, *RECIPE, launcher=SIGNALS), tmp_path / "interrupted-1.log")
    run.wait_until("step 1", past_step(run_dir, 1))
    os.kill(run.rank_pids()[1], signal.SIGTERM)
    assert run.finish() == 1 and set(_stops(run.text()).values()) == {stopped := checkpoint_steps(run_dir)[-1]}
    assert 0 < stopped < STEPS_PER_EPOCH, run.text()[-3000:]
    # resume, then SIGKILL every process once a mid-epoch-1 checkpoint exists
    run = Run(torchrun(shards, run_dir, *RECIPE), tmp_path / "interrupted-2.log")
    run.wait_until("the step-8 checkpoint", lambda: 8 in checkpoint_steps(run_dir))
    run.kill()
    run = Run(torchrun(shards, run_dir, *RECIPE), tmp_path / "interrupted-3.log")
    assert run.finish() == 0, run.text()[-4000:]
    resumed = re.search(r"resumed from \S+/step-(\d+)\.pt at step \d+ \(epoch 1, batch (\d)", run.text())
    assert resumed and int(resumed.group(1)) >= 8 and resumed.group(2) != "0", run.text()[-3000:]

    name = f"step-{FINAL:09d}.pt"
    final, expected = load(run_dir / "checkpoints" / name), load(reference / "checkpoints" / name)
    assert_bitwise_equal(final, expected)  # weights, LARS momentum and EMA weights
    assert final["data"]["accum_steps"] == 2 and final["config"]["optim"]["name"] == "lars"
    ema, model = final["ema"], final["model"]
    assert any(not torch.equal(ema[k], model[k]) for k in model if model[k].is_floating_point())  # a real average
    assert {"val_ema/top1", "val/top1"} <= final["val"].keys()
