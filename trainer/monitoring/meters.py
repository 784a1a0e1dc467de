"""What a run measures of itself: where its wall clock goes (`TimeAccount`), the training meter
(`StepMeter`) and the GPU's memory.

Time: buckets that partition the wall clock, and goodput = training-step time / wall time.

The loop wraps each phase in `measure(bucket)`; whatever no phase claims is "other" (logging, the
epoch's bookkeeping), so the buckets always add up to the wall time. "startup" runs from the process's
start to the first step; "compile" is the first step of a start with model.compile (where compilation
happens). Each epoch logs its buckets (`time/<bucket>_s`), `perf/goodput` and `time/epoch_gap_s` (from
the previous epoch's last step to this one's first, validation left out); `table()` is the
"where the time went" summary printed at the end of a run and on a stop.

The meter: loss, throughput and data wait since the last log, reduced over ranks only then. Losses add
up on the device, so a step costs no sync; `report` is the one sync point (an all-reduce of two numbers
and a read), on log steps only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from trainer import dist

BUCKETS = ("startup", "compile", "step", "data_wait", "validation", "checkpoint", "other")


def process_start() -> float:
    """When this process started, on the time.monotonic() clock (Linux: /proc; elsewhere: now)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.monotonic() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic()


class TimeAccount:
    def __init__(self, started: float | None = None) -> None:
        self.started = process_start() if started is None else started
        self.total = dict.fromkeys(BUCKETS, 0.0)
        self._window = dict.fromkeys(BUCKETS, 0.0)
        self._window_start = self.started
        self._epoch_end: tuple[float, float] | None = None  # (when the last epoch's last step ended, validation)
        self._gap = 0.0  # between the last step of one epoch and the first of the next, validation left out

    def add(self, bucket: str, seconds: float) -> None:
        self.total[bucket] += seconds
        self._window[bucket] += seconds

    @contextmanager
    def measure(self, bucket: str) -> Iterator[None]:
        t0 = time.monotonic()
        if bucket == "step" and self._epoch_end is not None:  # the first step of an epoch
            ended, validation = self._epoch_end
            self._gap += t0 - ended - (self.total["validation"] - validation)
            self._epoch_end = None
        try:
            yield
        finally:
            self.add(bucket, time.monotonic() - t0)

    def epoch_ended(self) -> None:
        """The epoch's last step has run: the gap to the next epoch's first step starts now."""
        self._epoch_end = (time.monotonic(), self.total["validation"])

    def start_training(self) -> None:
        """The first step is about to run: everything since the process started was start-up."""
        self.add("startup", time.monotonic() - self._window_start - sum(self._window.values()))

    def window(self) -> dict[str, float]:
        """Seconds per bucket since the previous call (the first: since the process started), with
        `perf/goodput`; starts the next window."""
        now = time.monotonic()
        wall = now - self._window_start
        busy = sum(seconds for name, seconds in self._window.items() if name != "other")
        buckets = {**self._window, "other": max(0.0, wall - busy)}  # table() derives its own total
        self._window, self._window_start = dict.fromkeys(BUCKETS, 0.0), now
        out = {f"time/{name}_s": seconds for name, seconds in buckets.items()}
        gap, self._gap = self._gap, 0.0
        return {**out, "time/wall_s": wall, "time/epoch_gap_s": gap,
                "perf/goodput": buckets["step"] / wall if wall > 0 else 0.0}

    def table(self) -> str:
        """Where the time went since the process started, one bucket a line (call after `window`)."""
        wall = time.monotonic() - self.started
        rows = {**self.total, "other": max(0.0, wall - sum(v for k, v in self.total.items() if k != "other"))}
        lines = [f"where the time went ({wall:.1f} s since the process started, goodput "
                 f"{rows['step'] / wall if wall else 0:.1%}):"]
        lines += [f"  {name:<11} {seconds:9.1f} s  {seconds / wall if wall else 0:6.1%}"
                  for name, seconds in rows.items()]
        return "\n".join(lines)


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


def gpu_memory(device: torch.device) -> dict[str, float]:
    """CUDA memory in GiB: now allocated, reserved by the caching allocator, and the peak since the
    last call. Host-side counters: no device sync. Empty off CUDA."""
    if device.type != "cuda":
        return {}
    gib = 2.0**30
    out = {
        "gpu/mem_allocated_gib": torch.cuda.memory_allocated(device) / gib,
        "gpu/mem_reserved_gib": torch.cuda.memory_reserved(device) / gib,
        "gpu/mem_peak_gib": torch.cuda.max_memory_allocated(device) / gib,
    }
    torch.cuda.reset_peak_memory_stats(device)
    return out
