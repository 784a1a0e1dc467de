"""Where a run's wall clock goes: buckets that partition it, and goodput = training-step time / wall time.

The loop wraps each phase in `measure(bucket)`; whatever no phase claims is "other" (logging, the
epoch's bookkeeping), so the buckets always add up to the wall time. "startup" runs from the process's
start to the first step; "compile" is the first step of a start with model.compile (where compilation
happens). Each epoch logs its buckets (`time/<bucket>_s`), `perf/goodput` and `time/epoch_gap_s` (from
the previous epoch's last step to this one's first, validation left out); `table()` is the
"where the time went" summary printed at the end of a run and on a stop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
