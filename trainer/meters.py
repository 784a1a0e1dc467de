"""The training meter: loss, throughput and data wait since the last log, reduced over ranks only then.

Losses add up on the device, so a step costs no sync; `report` is the one sync point (an all-reduce of
two numbers and a read), on log steps only. The data wait is the time account's (goodput.py).
"""

from __future__ import annotations

import time

import torch

from trainer import dist
from trainer.goodput import TimeAccount


class StepMeter:
    def __init__(self, device: torch.device, global_batch: int, account: TimeAccount) -> None:
        self.global_batch, self.account = global_batch, account
        self.sums = torch.zeros(2, device=device)  # [sum of losses, steps] since the last report
        self.restart()

    def restart(self) -> None:
        """Start a new window: at each epoch's start, so validation and saving stay out of its figures."""
        self.sums.zero_()
        self.tick, self.waited = time.monotonic(), self.account.total["data_wait"]

    def add(self, loss: torch.Tensor) -> None:
        self.sums += torch.stack([loss.float(), loss.new_ones((), dtype=torch.float32)])

    def report(self, info: dist.DistInfo) -> tuple[float, dict[str, float]]:
        """(mean loss over ranks and steps, perf metrics) since the last report; starts a new window."""
        loss_sum, steps = dist.all_reduce_sum(self.sums, info).tolist()  # a sync point
        elapsed = time.monotonic() - self.tick
        waited = self.account.total["data_wait"] - self.waited
        local_steps = steps / info.world_size
        perf = {
            "perf/images_per_s": local_steps * self.global_batch / elapsed,
            "perf/step_time_s": elapsed / local_steps,
            "perf/data_wait_fraction": waited / elapsed,
        }
        self.restart()
        return loss_sum / steps, perf
