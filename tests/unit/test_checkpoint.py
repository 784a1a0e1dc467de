"""Checkpoint files (resilience/checkpoint.py) and their background writer (async_checkpoint.py).

Real checkpoint files (torch.save of a small model's state) in a real directory. Rotation and resume
follow the order files were written in, not their step numbers: a run restarted with
checkpoint.resume=false, or one whose step counter moved back under a new data plan, writes lower step
numbers than files already there; damaged files leave the rotation; a directory whose checkpoints are
all unusable is an error, not a silent restart from step 0. Malicious pickles are refused; best.pt is
a link that survives rotation. A staged background copy gives the tensors of the state at `stage`
and the plain values of the state at `save`; a copy staged for another step is never written.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
import torch

from trainer import config
from trainer.errors import CheckpointError
from trainer.resilience import checkpoint
from trainer.resilience.async_checkpoint import AsyncCheckpointer


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


def _state(step: int) -> dict:
    torch.manual_seed(step)
    return {"model": {"w": torch.randn(64, 64), "b": torch.randn(64)}, "step": step}


def test_save_keeps_the_last_k_and_clears_partial_writes(tmp_path):
    (tmp_path / "step-000000007.pt.tmp").write_bytes(b"half a checkpoint from a killed process")
    for step in (1, 2, 3, 4):
        checkpoint.save(_state(step), tmp_path, step, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000003.pt", "step-000000004.pt"]
    assert torch.equal(checkpoint.load(tmp_path / "step-000000004.pt")["model"]["w"], _state(4)["model"]["w"])


@pytest.mark.parametrize("damage", ["truncate", "flip a byte of a tensor"])
def test_damaged_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, caplog, damage):
    for step in (1, 2):
        checkpoint.save(_state(step), tmp_path, step, keep_last=2)
    newest = tmp_path / "step-000000002.pt"
    raw = bytearray(newest.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) - 100]
    else:  # torch.load alone would return wrong weights here; the CRC check catches it
        raw[raw.find(_state(2)["model"]["w"].numpy().tobytes()[:16]) + 1000] ^= 0xFF
    newest.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="trainer.resilience.checkpoint"):
        path, state = checkpoint.load_latest(tmp_path)
    assert path == tmp_path / "step-000000001.pt" and state["step"] == 1
    assert f"skipping damaged checkpoint, falling back to the one before it: checkpoint {newest} is" in caplog.text


class _Payload:
    """Unpickling this runs os.makedirs(target): a stand-in for any code a crafted file could run."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return os.makedirs, (self.target,)


def test_checkpoint_with_a_pickled_payload_is_refused_and_nothing_runs(tmp_path):
    bad = tmp_path / "step-000000005.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "step": 5, "extra": _Payload(str(tmp_path / "ran"))}, bad)
    torch.load(bad, weights_only=False)  # the payload is real: a plain unpickle runs it
    assert (tmp_path / "ran").is_dir()
    os.rmdir(tmp_path / "ran")

    with pytest.raises(CheckpointError) as refused:
        checkpoint.load(bad)
    assert not (tmp_path / "ran").exists()  # nothing ran
    message = str(refused.value)
    assert str(bad) in message and "pickled Python objects" in message and "makedirs" in message


def test_best_is_a_link_that_survives_rotation(tmp_path):
    first = checkpoint.save(_state(1), tmp_path, 1, keep_last=2)
    checkpoint.mark_best(first)
    for step in (2, 3):
        checkpoint.save(_state(step), tmp_path, step, keep_last=2)
    assert not first.exists() and checkpoint.load(tmp_path / "best.pt")["step"] == 1
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step-000000002.pt", "step-000000003.pt"]


def test_keeping_fewer_than_two_checkpoints_is_a_config_error():
    with pytest.raises(config.ConfigError, match="checkpoint.keep_last must be >= 2"):
        config.load(None, ["checkpoint.keep_last=1"])
    with pytest.raises(config.ConfigError, match="checkpoint.every_minutes must be >= 0"):
        config.load(None, ["checkpoint.every_minutes=-1"])


def async_state(weight: float, step: int, val: float | None) -> dict:
    return {"model": {"w": torch.full((1000,), weight)}, "step": step, "val": val, "best_val_top1": val}


def saver(tmp_path: Path, written: list) -> AsyncCheckpointer:
    return AsyncCheckpointer(tmp_path, keep_last=5, keep_best=True,
                             on_saved=lambda path, step, best: written.append((path.name, step, best)))


def test_a_staged_copy_gives_the_tensors_and_the_save_the_plain_values(tmp_path: Path):
    written: list = []
    ckpt = saver(tmp_path, written)
    ckpt.stage(async_state(1.0, 10, None), 10)
    ckpt.save(async_state(9.0, 10, 0.75), 10, best=True)  # its tensors are not the ones written
    ckpt.wait()
    saved = checkpoint.load(tmp_path / written[0][0])
    assert written == [(written[0][0], 10, True)] and (tmp_path / "best.pt").is_file()
    assert saved["val"] == 0.75 and saved["best_val_top1"] == 0.75 and saved["step"] == 10
    assert torch.equal(saved["model"]["w"], torch.full((1000,), 1.0))


def test_a_copy_staged_for_another_step_is_not_used(tmp_path: Path):
    written: list = []
    ckpt = saver(tmp_path, written)
    ckpt.stage(async_state(1.0, 10, None), 10)
    ckpt.save(async_state(2.0, 11, None), 11, best=False)  # the step moved on: copy anew
    ckpt.close()
    saved = checkpoint.load(tmp_path / written[0][0])
    assert [w[1] for w in written] == [11] and saved["step"] == 11
    assert torch.equal(saved["model"]["w"], torch.full((1000,), 2.0))


def test_a_staged_copy_that_is_never_saved_writes_nothing(tmp_path: Path):
    written: list = []
    ckpt = saver(tmp_path, written)
    ckpt.stage(async_state(1.0, 10, None), 10)
    ckpt.close()  # e.g. validation raised: the epoch's checkpoint is dropped
    assert written == [] and checkpoint.list_checkpoints(tmp_path) == []
