"""TrainState carries the EMA: its weights go into the checkpoint and come back on restore; a checkpoint
without them (EMA switched on mid-run) starts the EMA from the resumed weights.
"""

from __future__ import annotations

import io

import torch

from trainer.ema import ModelEma
from trainer.resilience.state import TrainState, data_plan

PLAN = data_plan(seed=0, world_size=1, workers=0, batch_size=4, shuffle_buffer=8, train_samples=16,
                 steps_per_epoch=4)


def state_for(model: torch.nn.Module, ema: ModelEma | None) -> TrainState:
    return TrainState(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.amp.GradScaler("cpu", enabled=False),
                      PLAN, {}, ema=ema)


def round_trip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_ema_weights_go_into_the_checkpoint_and_come_back():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = ModelEma(model, 0.9, warmup=False)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, 1)
    saved = round_trip(state_for(model, ema).to_checkpoint())
    assert torch.equal(saved["ema"]["weight"], ema.module.weight)
    assert not torch.equal(saved["ema"]["weight"], saved["model"]["weight"])

    fresh = torch.nn.Linear(3, 2)
    restored = state_for(fresh, ModelEma(fresh, 0.9, warmup=False))
    restored.restore(saved, "test")
    assert restored.ema is not None and torch.equal(restored.ema.module.weight, ema.module.weight)
    assert torch.equal(fresh.weight, model.weight)


def test_a_checkpoint_without_ema_starts_the_ema_from_the_resumed_weights():
    model = torch.nn.Linear(3, 2)
    saved = round_trip(state_for(model, None).to_checkpoint())
    assert saved["ema"] is None
    fresh = torch.nn.Linear(3, 2)
    ema = ModelEma(fresh, 0.9)
    state_for(fresh, ema).restore(saved, "test")
    assert torch.equal(ema.module.weight, model.weight) and torch.equal(ema.module.bias, model.bias)


def test_best_follows_the_better_top1_of_the_weights_and_their_ema():
    ts = state_for(torch.nn.Linear(3, 2), None)
    epochs = [{"val/top1": 0.30, "val_ema/top1": 0.40},  # first: best, at the EMA's 0.40
              {"val/top1": 0.38, "val_ema/top1": 0.39},  # neither beats 0.40
              {"val/top1": 0.45, "val_ema/top1": 0.41},  # the weights' 0.45
              {"val/top1": 0.44, "val_ema/top1": 0.46}]  # the EMA's 0.46
    assert [ts.record_val(v) for v in epochs] == [True, False, True, True]
    assert ts.best_top1 == 0.46
    assert ts.record_val(None) is False and ts.record_val({"val/top1": 0.47}) is True  # no EMA: val/top1 alone


def test_update_ema_follows_the_position_and_does_nothing_without_an_ema():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ts = state_for(model, ModelEma(model, 0.99, warmup=True))
    before = ts.ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ts.pos.advance()
    ts.update_ema()  # optimizer step 1: warmup decay (1 + 1) / (10 + 1) = 2/11
    torch.testing.assert_close(ts.ema.module.weight, before * 2 / 11 + model.weight * 9 / 11)
    state_for(model, None).update_ema()  # train.ema_decay=0: nothing to do, nothing raised
