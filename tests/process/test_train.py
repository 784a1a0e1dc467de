"""End to end on the CPU: a real 2-process torchrun run on gloo, real shards, real offline W&B files.

One run, stopped by SIGTERM to torchrun in its second epoch and started again with the same command:
both ranks take equal batch counts, validation counts every image once, steps continue without
repeats, and W&B holds the same losses as metrics.jsonl in one run id. A small model at 32 px (the
other process tests' model) keeps it cheap; the seed AlexNet is covered by the model and recipe tests.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import torch

from helpers.common import CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS
from helpers.resilience_procs import Run, checkpoint_steps, past_step, torchrun
from helpers.wandb_records import history, run_ids

TRAIN_IMAGES, VAL_IMAGES = CLASSES * TRAIN_PER_CLASS, CLASSES * VAL_PER_CLASS
BATCH = 8  # global: resilience_procs.trainer_args
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH
EPOCHS = 3
END = EPOCHS * STEPS_PER_EPOCH


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_process_run_trains_validates_logs_and_resumes_after_sigterm(shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    cmd = torchrun(shards, run_dir, f"train.epochs={EPOCHS}", "train.log_every=2", "wandb.mode=offline")
    first = Run(cmd, tmp_path / "first.log")
    first.wait_until("step 8, in epoch 2", past_step(run_dir, STEPS_PER_EPOCH + 2))
    first.proc.send_signal(signal.SIGTERM)  # to the torchrun agent, as a scheduler would
    first.finish()
    before = metrics(run_dir)
    stopped_at = checkpoint_steps(run_dir)[-1]  # the stop request's checkpoint
    assert STEPS_PER_EPOCH < stopped_at < END, "the run was not interrupted after its first epoch"

    second = Run(cmd, tmp_path / "second.log")
    assert second.finish() == 0, second.text()[-4000:]
    assert f"resumed from {run_dir / 'checkpoints'}" in second.text()
    rows = metrics(run_dir)
    after = rows[len(before):]

    # Both ranks took the same number of batches (the loop gathers and compares them at each epoch's end;
    # a start counts the batches it took itself, and the interrupted epoch's first part is not reported) ...
    taken = [r["train/epoch_batches"] for r in rows if "train/epoch_batches" in r]
    assert taken[0] == STEPS_PER_EPOCH and sum(taken) == END - stopped_at % STEPS_PER_EPOCH, taken
    # ... and validation counted every validation image exactly once across the two ranks, each epoch.
    val = [r for r in rows if "val/count" in r]
    assert [r["val/count"] for r in val] == [VAL_IMAGES] * EPOCHS
    assert all(0 <= r["val/top1"] <= r["val/top5"] <= 1 for r in val)
    # Steps continue after the resume, none repeated, to the end of epoch 2.
    resumed = [r["step"] for r in after if "train/loss" in r]
    assert resumed and min(resumed) > stopped_at, "steps were repeated after the resume"
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(2, END + 1, 2))

    final = torch.load(run_dir / "checkpoints" / f"step-{END:09d}.pt", weights_only=True)
    assert (final["step"], final["epoch"], final["step_in_epoch"]) == (END, EPOCHS, 0)
    assert (run_dir / "config.yaml").is_file()

    # Both processes wrote to the same W&B run; it holds the same training losses at the same steps.
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2 and set().union(*map(run_ids, files)) == {final["wandb_run_id"]}
    logged = [(r["trainer/step"], r["train/loss"]) for f in files for r in history(f) if "train/loss" in r]
    assert logged == [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
