"""The per-step guard on the CPU (resilience/guard.py): non-finite losses counted, a real stop signal
agreed on, the checkpoint clock."""

from __future__ import annotations

import os
import signal

import torch

from trainer import dist
from trainer.resilience import guard


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
