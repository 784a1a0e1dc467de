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
