"""In-process checks of the resilience pieces: checkpoint files (rotation, damage, malicious pickles,
best.pt), where a resumed run continues under another data plan, and the per-step guard on the CPU.
"""

from __future__ import annotations

import logging
import os
import signal

import pytest
import torch

from trainer import checkpoint, config, dist, guard, lifecycle
from trainer.checkpoint import CheckpointError
from trainer.resume import Position, data_plan, resume_position


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
    with caplog.at_level(logging.WARNING, logger="trainer.checkpoint"):
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


def _plan(world_size: int, workers: int = 2) -> dict:
    return data_plan(seed=0, world_size=world_size, workers=workers, batch_size=8, shuffle_buffer=16,
                     train_samples=48, steps_per_epoch=6)


def test_same_plan_resumes_mid_epoch_exactly():
    state = {"step": 9, "epoch": 1, "step_in_epoch": 3, "data": _plan(2)}
    assert resume_position(state, _plan(2)) == Position(9, 1, 3)


def test_new_world_size_mid_epoch_continues_at_the_next_epoch_with_a_warning(caplog):
    state = {"step": 9, "epoch": 1, "step_in_epoch": 3, "data": _plan(2)}
    with caplog.at_level(logging.WARNING, logger="trainer.resume"):
        assert resume_position(state, _plan(4), "ckpt") == Position(12, 2, 0)
    assert "(world_size 2 -> 4)" in caplog.text and "continues at the start of epoch 2" in caplog.text


def test_new_world_size_at_an_epoch_boundary_continues_exactly(caplog):
    with caplog.at_level(logging.WARNING, logger="trainer.resume"):
        assert resume_position({"step": 6, "epoch": 1, "step_in_epoch": 0, "data": _plan(2)}, _plan(1)) \
            == Position(6, 1, 0)
        # All batches of epoch 0 taken, its validation not yet done: it is done under the new plan too.
        assert resume_position({"step": 6, "epoch": 0, "step_in_epoch": 6, "data": _plan(2, workers=4)},
                               _plan(1)) == Position(6, 0, 6)
    assert caplog.text == ""


def test_guard_counts_nonfinite_losses_and_agrees_on_a_real_stop_signal():
    info = dist.DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        g = guard.StepGuard(info, every_minutes=0)
        verdicts = [g.check(torch.tensor(v), will_save=False) for v in (1.0, float("nan"), float("inf"), 2.0)]
        assert [(v.nonfinite, v.streak) for v in verdicts] == [(0, 0), (1, 1), (1, 2), (0, 0)]
        assert not any(v.stop or v.save_due for v in verdicts)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert g.check(torch.tensor(1.0), will_save=False).stop and g.stop_requested()
        assert guard.StepGuard(info, every_minutes=1e-9).check(torch.tensor(1.0), will_save=False).save_due
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def test_an_errors_first_line_is_its_message_or_its_type():
    assert lifecycle.first_line(OSError("\n  No space left on device\nmore detail\n")) == "No space left on device"
    assert lifecycle.first_line(RuntimeError("")) == "RuntimeError"
    assert lifecycle.first_line(ValueError("x" * 500), limit=10) == "x" * 10
