"""A torch.profiler window over optimizer steps (run.profile_steps, e.g. "100-110"): one Chrome trace per
rank in run.dir/profile/, each step a "ProfilerStep#<step>" range, with the loop's own regions (data wait,
step) inside. Off (""), `build_profiler` gives a null object whose calls do nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import profiler

from trainer.config import step_window

log = logging.getLogger(__name__)


class NullProfiler:
    """run.profile_steps="": nothing is recorded, nothing is imported or allocated per step."""

    def step(self, step: int) -> None:
        pass

    def region(self, name: str) -> AbstractContextManager:
        return nullcontext()

    def close(self) -> None:
        pass


class WindowProfiler:
    """Records optimizer steps first..end-1; `step(s)` is called once per step, before fetching batch s.
    A run resumed inside the window records the rest of it; the trace is written when step `end` starts
    (or at `close`), then handed to `on_trace` (e.g. an upload as a W&B artifact)."""

    def __init__(self, first: int, end: int, out_dir: Path, rank: int,
                 on_trace: Callable[[Path], None] | None = None) -> None:
        self.first, self.end, self.out_dir, self.rank, self.on_trace = first, end, out_dir, rank, on_trace
        self.prof: Any = None
        self.current: Any = None  # the open ProfilerStep range
        self.path: Path | None = None  # the trace, once written
        self.started = first  # the first step recorded (later when resumed inside the window)

    def step(self, step: int) -> None:
        if self.current is not None:
            self.current.__exit__(None, None, None)
            self.current = None
        if self.prof is None and self.path is None and self.first <= step < self.end:
            activities = [profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(profiler.ProfilerActivity.CUDA)
            self.prof = profiler.profile(activities=activities)
            self.prof.__enter__()
            self.started = step
        if self.prof is not None and step >= self.end:
            self._finish()
        if self.prof is not None:
            self.current = profiler.record_function(f"ProfilerStep#{step}")
            self.current.__enter__()

    def region(self, name: str) -> AbstractContextManager:
        """A named range in the trace (e.g. "data_wait", "train_step") while the window records."""
        return profiler.record_function(name) if self.prof is not None else nullcontext()

    def close(self) -> None:
        """The run ends (or stops) inside the window: write what was recorded. Called on every way out of a
        run, before the checkpoint wait and the lock's release, so it never raises."""
        try:
            if self.current is not None:
                self.current.__exit__(None, None, None)
                self.current = None
            if self.prof is not None:
                self._finish()
        except Exception as e:  # noqa: BLE001 - a trace is never worth the run's own way out
            log.warning("the profiler trace of steps from %d was not written (%s: %s)", self.started,
                        type(e).__name__, e)

    def _finish(self) -> None:
        self.prof.__exit__(None, None, None)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"trace-rank{self.rank}-steps{self.started}-{self.end}.json"
        self.prof.export_chrome_trace(str(path))
        self.prof, self.path = None, path
        log.info("profiler trace of steps %d-%d written to %s (open it in chrome://tracing or Perfetto)",
                 self.started, self.end - 1, path)
        if self.on_trace is not None:
            try:
                self.on_trace(path)
            except Exception as e:  # noqa: BLE001 - an upload failure must not stop training
                log.warning("the profiler trace %s was not uploaded (%s: %s)", path, type(e).__name__, e)


def build_profiler(profile_steps: str, run_dir: Path, rank: int,
                   on_trace: Callable[[Path], None] | None = None) -> NullProfiler | WindowProfiler:
    """run.profile_steps -> a WindowProfiler writing to run_dir/profile/, or a NullProfiler when ""."""
    window = step_window(profile_steps, "run.profile_steps")
    if window is None:
        return NullProfiler()
    return WindowProfiler(*window, run_dir / "profile", rank, on_trace)
