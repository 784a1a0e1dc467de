"""Where a resumed run continues (resilience/state.py): exactly under the same data plan, at the next
epoch boundary under another."""

from __future__ import annotations

import logging

from trainer.resilience.state import Position, data_plan, resume_position


def _plan(world_size: int, workers: int = 2) -> dict:
    return data_plan(seed=0, world_size=world_size, workers=workers, batch_size=8, shuffle_buffer=16,
                     train_samples=48, steps_per_epoch=6)


def test_same_plan_resumes_mid_epoch_exactly():
    state = {"step": 9, "epoch": 1, "step_in_epoch": 3, "data": _plan(2)}
    assert resume_position(state, _plan(2)) == Position(9, 1, 3)


def test_new_world_size_mid_epoch_continues_at_the_next_epoch_with_a_warning(caplog):
    state = {"step": 9, "epoch": 1, "step_in_epoch": 3, "data": _plan(2)}
    with caplog.at_level(logging.WARNING, logger="trainer.resilience.state"):
        assert resume_position(state, _plan(4), "ckpt") == Position(12, 2, 0)
    assert "(world_size 2 -> 4)" in caplog.text and "continues at the start of epoch 2" in caplog.text


def test_new_world_size_at_an_epoch_boundary_continues_exactly(caplog):
    with caplog.at_level(logging.WARNING, logger="trainer.resilience.state"):
        assert resume_position({"step": 6, "epoch": 1, "step_in_epoch": 0, "data": _plan(2)}, _plan(1)) \
            == Position(6, 1, 0)
        # All batches of epoch 0 taken, its validation not yet done: it is done under the new plan too.
        assert resume_position({"step": 6, "epoch": 0, "step_in_epoch": 6, "data": _plan(2, workers=4)},
                               _plan(1)) == Position(6, 0, 6)
    assert caplog.text == ""


def _state(amp: str):
    import torch

    from trainer.resilience.state import TrainState

    model = torch.nn.Linear(3, 2)
    return TrainState(model, torch.optim.SGD(model.parameters(), lr=0.1),
                      torch.amp.GradScaler("cpu", enabled=amp == "fp16", init_scale=128.0), plan={}, config={})


def test_a_bf16_checkpoint_resumes_under_fp16_with_fresh_loss_scaling(caplog):
    saved = _state("bf16").to_checkpoint()
    assert saved["scaler"] == {}  # what a disabled GradScaler saves, and an enabled one refused to load
    resumed = _state("fp16")
    with caplog.at_level(logging.INFO):
        resumed.restore(saved, "ckpt.pt")
    assert resumed.scaler.is_enabled() and resumed.scaler.get_scale() == 128.0
    assert "ckpt.pt has no loss-scaling state" in caplog.text


def test_fp16_scaling_state_resumes_and_is_ignored_without_fp16(caplog):
    import torch

    run = _state("fp16")
    run.scaler.scale(torch.ones(()))  # scaling starts lazily, with the first scaled loss
    run.scaler.update(new_scale=512.0)
    saved = run.to_checkpoint()
    again = _state("fp16")
    again.restore(saved, "ckpt.pt")
    assert again.scaler.get_scale() == 512.0
    off = _state("bf16")
    with caplog.at_level(logging.INFO):
        off.restore(saved, "ckpt.pt")
    assert not off.scaler.is_enabled() and "holds fp16 loss-scaling state (scale 512)" in caplog.text
