"""trainer/ema.py: EMA values after a few updates, computed by hand; the warmup formula; an EMA resumed from
its state_dict continues bitwise like an uninterrupted one; DDP-style wrappers are looked through.
"""

from __future__ import annotations

import io

import pytest
import torch

from trainer.ema import ModelEma


class One(torch.nn.Module):
    """A single weight w and a batch-norm (float buffers and an integer one)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.bn = torch.nn.BatchNorm1d(1)


def set_w(model: One, value: float) -> None:
    with torch.no_grad():
        model.w.fill_(value)


def test_ema_values_after_three_updates_without_warmup():
    model = One()
    set_w(model, 0.0)
    ema = ModelEma(model, decay=0.5, warmup=False)
    for step, value in enumerate([4.0, 8.0, 2.0], start=1):
        set_w(model, value)
        model.bn.num_batches_tracked.fill_(step)
        ema.update(model, step)
    # 0 -> 0.5*0 + 0.5*4 = 2 -> 0.5*2 + 0.5*8 = 5 -> 0.5*5 + 0.5*2 = 3.5
    assert ema.module.w.item() == 3.5
    assert ema.module.bn.num_batches_tracked.item() == 3  # integer buffers are copied
    assert not ema.module.w.requires_grad and not ema.module.training


def test_warmup_decay_is_timms_formula_capped_by_the_decay():
    ema = ModelEma(One(), decay=0.9)
    assert [ema.decay_at(t) for t in (0, 1, 8, 80, 1000)] == pytest.approx([0.1, 2 / 11, 0.5, 0.9, 0.9])
    model = One()
    set_w(model, 0.0)
    ema = ModelEma(model, decay=0.9)
    set_w(model, 11.0)
    ema.update(model, 1)  # d = 2/11: 2/11 * 0 + 9/11 * 11 = 9
    assert ema.module.w.item() == pytest.approx(9.0, rel=1e-15)


def test_a_resumed_ema_continues_bitwise():
    torch.manual_seed(0)
    live = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4))
    values = [torch.randn(5, 16) for _ in range(7)]

    def train_a_step(step: int) -> None:
        with torch.no_grad():
            for p in live.parameters():
                p.mul_(0.9).add_(values[step].sum() * 1e-2)
        live.train()(values[step].T)  # batch-norm statistics move too

    straight = ModelEma(live, decay=0.999)
    snapshot = {k: v.clone() for k, v in live.state_dict().items()}
    for step in range(7):
        train_a_step(step)
        straight.update(live, step + 1)

    live.load_state_dict(snapshot)
    first = ModelEma(live, decay=0.999)
    for step in range(3):
        train_a_step(step)
        first.update(live, step + 1)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # as a checkpoint holds it
    buf.seek(0)
    resumed = ModelEma(torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4)), decay=0.999)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for step in range(3, 7):
        train_a_step(step)
        resumed.update(live, step + 1)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_wrappers_are_looked_through():
    class Wrapper(torch.nn.Module):  # as DDP: the model under .module
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

    model = One()
    ema = ModelEma(Wrapper(model), decay=0.5, warmup=False)
    assert set(ema.state_dict()) == set(model.state_dict())
    set_w(model, 2.0)
    ema.update(Wrapper(model), 1)
    assert ema.module.w.item() == 1.0
