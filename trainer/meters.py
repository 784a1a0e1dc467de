"""The training meter: loss, throughput and data wait since the last log, reduced over ranks only then.

Losses add up on the device, so a step costs no sync; `report` is the one sync point (an all-reduce of
two numbers and a read), on log steps only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from trainer import dist


class StepMeter:
    def __init__(self, device: torch.device, global_batch: int) -> None:
        self.global_batch = global_batch
        self.sums = torch.zeros(2, device=device)  # [sum of losses, steps] since the last report
        self.wait, self.tick = 0.0, time.perf_counter()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Time spent in the block counts as waiting for data."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.wait += time.perf_counter() - t0

    def add(self, loss: torch.Tensor) -> None:
        self.sums += torch.stack([loss.float(), loss.new_ones((), dtype=torch.float32)])

    def report(self, info: dist.DistInfo) -> tuple[float, dict[str, float]]:
        """(mean loss over ranks and steps, perf metrics) since the last report; starts a new window."""
        loss_sum, steps = dist.all_reduce_sum(self.sums, info).tolist()  # a sync point
        elapsed = time.perf_counter() - self.tick
        local_steps = steps / info.world_size
        perf = {
            "perf/images_per_s": local_steps * self.global_batch / elapsed,
            "perf/step_time_s": elapsed / local_steps,
            "perf/data_wait_fraction": self.wait / elapsed,
        }
        self.sums.zero_()
        self.wait, self.tick = 0.0, time.perf_counter()
        return loss_sum / steps, perf
