"""Checkpoint rotation and resume follow the order files were written in, not their step numbers.

Real checkpoint files (torch.save of a small model's state) in a real directory: a run restarted with
checkpoint.resume=false, or one whose step counter moved back under a new data plan, writes lower step
numbers than files already there; damaged files leave the rotation; a directory whose checkpoints are
all unusable is an error, not a silent restart from step 0.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from trainer import checkpoint
from trainer.checkpoint import CheckpointError


def state(step: int) -> dict:
    torch.manual_seed(step)
    return {"model": torch.nn.Linear(4, 3).state_dict(), "step": step}


def save(directory: Path, step: int, keep_last: int = 2) -> Path:
    path = checkpoint.save(state(step), directory, step, keep_last)
    time.sleep(0.01)  # distinct modification times, as real saves seconds apart have
    return path


def steps(directory: Path) -> list[int]:
    return [int(p.name[5:14]) for p in checkpoint.list_checkpoints(directory)]


def damage(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_new_run_in_a_used_run_dir_keeps_its_own_checkpoints(tmp_path: Path):
    """checkpoint.resume=false where an earlier run reached step 12: step 2 is the newest, not pruned."""
    for step in (10, 12):
        save(tmp_path, step)
    first = save(tmp_path, 2)
    assert first.exists() and steps(tmp_path) == [12, 2]
    checkpoint.mark_best(first)  # used to fail: the file had been deleted right after it was saved
    save(tmp_path, 4)
    assert steps(tmp_path) == [2, 4]
    assert checkpoint.load_latest(tmp_path)[1]["step"] == 4
    assert torch.equal(checkpoint.load(tmp_path / checkpoint.BEST)["model"]["weight"], state(2)["model"]["weight"])


def test_resume_continues_from_the_last_written_when_the_step_moved_back(tmp_path: Path):
    """train.batch_size 8 -> 16 turns step 8 into step 6 (the next epoch under the new plan)."""
    save(tmp_path, 6)
    save(tmp_path, 8)
    save(tmp_path, 7)  # written after step 8, by the run under the new plan
    path, loaded = checkpoint.load_latest(tmp_path)
    assert (path.name, loaded["step"]) == ("step-000000007.pt", 7)


def test_a_damaged_checkpoint_leaves_the_rotation_and_two_valid_ones_remain(tmp_path: Path):
    save(tmp_path, 20)  # a damaged file with a high step number...
    damage(tmp_path / "step-000000020.pt")
    save(tmp_path, 3)
    save(tmp_path, 4)
    assert steps(tmp_path) == [3, 4]  # ...no longer outlives the good saves after it
    damage(tmp_path / "step-000000004.pt")
    path, loaded = checkpoint.load_latest(tmp_path)
    assert loaded["step"] == 3 and (tmp_path / "step-000000004.pt.damaged").exists()  # kept, out of the way
    save(tmp_path, 5)
    assert steps(tmp_path) == [3, 5] and all(checkpoint.load(p) for p in checkpoint.list_checkpoints(tmp_path))


def test_the_file_just_written_is_kept_whatever_the_clock_says(tmp_path: Path):
    save(tmp_path, 1)
    later = save(tmp_path, 2)
    future = time.time() + 3600
    os.utime(later, (future, future))  # e.g. a file from a machine whose clock runs ahead
    written = save(tmp_path, 3)
    assert written.exists() and steps(tmp_path) == [3, 2]


def test_all_checkpoints_damaged_falls_back_to_best_or_is_an_error(tmp_path: Path):
    best = save(tmp_path, 6)
    (tmp_path / checkpoint.BEST).write_bytes(best.read_bytes())  # a copy (where hard links fail): stays intact
    save(tmp_path, 8)
    damage(tmp_path / "step-000000006.pt")
    damage(tmp_path / "step-000000008.pt")
    path, loaded = checkpoint.load_latest(tmp_path)
    assert path.name == checkpoint.BEST and loaded["step"] == 6

    damage(tmp_path / checkpoint.BEST)
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* can be loaded \(2 damaged: step-000000006"):
        checkpoint.load_latest(tmp_path)
    with pytest.raises(CheckpointError, match="refusing to start over from step 0 silently"):
        checkpoint.load_latest(tmp_path)  # also once the damaged files were renamed


def test_an_empty_directory_is_a_fresh_start(tmp_path: Path):
    assert checkpoint.load_latest(tmp_path / "checkpoints") is None
