"""W&B replay in-process: the rows of metrics.jsonl that W&B's own files lack are logged again, once each,
and a stop signal marks the run as preempted (the SIGKILL end to end: tests/process/test_monitoring_replay.py).
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

from trainer.config import WandbConfig
from trainer.monitoring.loggers import JsonlLogger, MultiLogger, NullLogger

from helpers.wandb_records import history, read_records


def test_replay_logs_what_wandb_lacks_once_and_preempting_marks_the_run(tmp_path: Path, wandb_home: None):
    import wandb

    from trainer.monitoring.wandb_history import held_rows
    from trainer.monitoring.wandb_logger import WandbLogger

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = [(2, {"train/loss": 1.5}), (4, {"train/loss": 1.25, "train/epoch": 0.5})]
    table_row = {"val/top1": 0.75}
    again = [(4, {"train/loss": 1.0, "train/epoch": 0.5}), (6, {"val/top1": 0.25}), (6, {"val/top1": 0.25})]
    try:
        logger = WandbLogger(WandbConfig(mode="offline"), run_dir, "replay01", {})
        for step, row in first:
            logger.log(row, step)
        # a validation row with a table beside its scalars: metrics.jsonl holds the scalars only
        logger.log({**table_row, "val/worst_classes": [{"class": 1, "top1": 0.5}, {"class": 0, "top1": 1.0}]}, 3)
        logger.preempting()  # a stop signal: the W&B run ends "preempted", with the trainer's status
        logger.close()
        logger.preempting()  # on a finished run too: never raises
        wandb.teardown()  # W&B's service closes the file (the next start is a new process in real life)
        (segment,) = run_dir.glob("wandb/offline-run-*-replay01")
        kinds = [r.WhichOneof("record_type") for r in read_records(segment / "run-replay01.wandb")]
        assert "preempting" in kinds
        assert [r.exit.exit_code for r in read_records(segment / "run-replay01.wandb")
                if r.WhichOneof("record_type") == "exit"] == [75]

        # The next start: metrics.jsonl has step 4 twice (a resume from an older checkpoint) and a row
        # logged twice with the same values; W&B holds the first two rows. Each row is matched once.
        time.sleep(1.1)  # the next segment's directory name (its start time, in seconds) differs
        logger = WandbLogger(WandbConfig(mode="offline"), run_dir, "replay01", {})
        assert logger.replay(first + [(3, table_row)] + again) == 3  # the table's row is held
        logger.close()
    finally:
        wandb.teardown()
    segments = sorted(run_dir.glob("wandb/offline-run-*-replay01"))
    assert len(segments) == 2
    replayed = history(segments[1] / "run-replay01.wandb")
    assert [(r["trainer/step"], r["_step"]) for r in replayed] == [(4, 3), (6, 4), (6, 5)]
    assert replayed[0]["train/loss"] == 1.0 and replayed[1]["val/top1"] == 0.25

    # Now W&B holds every row exactly as often as metrics.jsonl does: a third start would log nothing.
    from trainer.monitoring.wandb_history import signature as _signature

    wanted = Counter(_signature(step, row) for step, row in first + [(3, table_row)] + again)
    assert held_rows(run_dir / "wandb", "replay01") == wanted
    # An online segment counts only the rows the server reported having (its next _step).
    online = run_dir / "wandb" / "run-20000101_000000-replay01"
    shutil.copytree(segments[0], online)
    shutil.rmtree(segments[0])
    assert held_rows(run_dir / "wandb", "replay01", online_below=1) == \
        wanted - Counter([_signature(*first[1]), _signature(3, table_row)])


def test_preempting_reaches_every_backend_that_has_it_and_a_torn_jsonl_line_is_ended(tmp_path: Path):
    class Recorder:
        def __init__(self) -> None:
            self.calls = 0

        def preempting(self) -> None:
            self.calls += 1

    NullLogger().preempting()
    recorder, jsonl = Recorder(), JsonlLogger(tmp_path / "metrics.jsonl")
    MultiLogger(jsonl, recorder).preempting()  # JsonlLogger has nothing to do: skipped, no error
    assert recorder.calls == 1
    jsonl.log({"train/loss": 2.0}, 1)
    jsonl.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "train/lo')  # a SIGKILL in the middle of a line
    jsonl = JsonlLogger(tmp_path / "metrics.jsonl")
    jsonl.log({"train/loss": 1.0}, 3)
    jsonl.close()
    assert JsonlLogger.rows(tmp_path / "metrics.jsonl") == [(1, {"train/loss": 2.0}), (3, {"train/loss": 1.0})]
