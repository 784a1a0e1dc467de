"""The per-step guard on the CPU (resilience/guard.py) and the checkpointer's save rule it applies:
non-finite losses counted, a real stop signal agreed on, one verdict that says whether to save."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest
import torch

from trainer import dist
from trainer.config import CheckpointConfig
from trainer.resilience import guard
from trainer.resilience.checkpointer import Checkpointer, NullWriter, due
from trainer.resilience.state import TrainState


def checkpointer(**cfg) -> Checkpointer:
    return Checkpointer(CheckpointConfig(**cfg), NullWriter(), contextlib.nullcontext)


def test_guard_counts_nonfinite_losses_and_agrees_on_a_real_stop_signal():
    info = dist.DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        stop = guard.StopFlag()
        g = guard.StepGuard(info, stop, checkpointer())
        verdicts = [g.check(torch.tensor(v), step, epoch_done=False)
                    for step, v in enumerate((1.0, float("nan"), float("inf"), 2.0), 1)]
        assert [(v.nonfinite, v.streak) for v in verdicts] == [(0, 0), (1, 1), (1, 2), (0, 0)]
        assert not any(v.stop or v.save for v in verdicts)
        os.kill(os.getpid(), signal.SIGUSR1)
        verdict = g.check(torch.tensor(1.0), 5, epoch_done=False)
        assert verdict.stop and verdict.save and g.stop_requested()  # a stop always saves first
        clock = guard.StepGuard(info, stop=guard.StopFlag(), rule=checkpointer(every_minutes=1e-9))
        assert clock.check(torch.tensor(1.0), 3, epoch_done=False).save  # checkpoint.every_minutes passed
        assert not clock.check(torch.tensor(1.0), 4, epoch_done=True).save  # the epoch's end saves after validation
        steps = guard.StepGuard(info, stop=guard.StopFlag(), rule=checkpointer(every_steps=2))
        assert [steps.check(torch.tensor(1.0), s, epoch_done=False).save for s in (1, 2, 3, 4)] == [
            False, True, False, True]
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def test_a_save_restarts_the_every_minutes_clock():
    rule = checkpointer(every_minutes=1 / 60)  # one second
    rule.last_save -= 2
    assert rule.clock_due()
    model = torch.nn.Linear(2, 2)
    rule.save(TrainState(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.amp.GradScaler("cpu", enabled=False),
                         plan={}, config={}))
    assert not rule.clock_due()


@pytest.mark.parametrize("step_, every, epoch_done, clock, stop, want", [
    (4, 2, False, False, False, True),    # checkpoint.every_steps
    (5, 2, False, False, False, False),
    (5, 0, False, False, False, False),   # every_steps=0: off
    (5, 0, False, True, False, True),     # checkpoint.every_minutes passed
    (6, 2, True, False, False, False),    # the epoch's end saves anyway, after validation
    (6, 2, True, True, False, False),
    (5, 0, False, False, True, True),     # a stop request saves, whatever else
    (6, 2, True, False, True, True),
])
def test_save_decision(step_: int, every: int, epoch_done: bool, clock: bool, stop: bool, want: bool):
    got = due(step_, every_steps=every, epoch_done=epoch_done, clock_due=clock, stop=stop)
    assert got == want, f"step {step_}, every_steps={every}, epoch_done={epoch_done}, clock={clock}, stop={stop}"
