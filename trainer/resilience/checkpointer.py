"""When a run saves, what it keeps, and the save itself: the one object the loop hands its checkpoints to.

Every rank holds a Checkpointer, so all ranks take the same save decision (`due`, `clock_due`: the
step guard agrees on them in its one collective). Only the main rank writes: it holds the background
writer (async_checkpoint.py); the others hold a NullWriter, so the loop never asks "am I rank 0?".
The checkpointer also keeps best.pt's bookkeeping (TrainState.record_val) and times its own blocking
part as the run's "checkpoint" time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from trainer.config import CheckpointConfig
from trainer.resilience.state import TrainState


def due(step: int, *, every_steps: int, epoch_done: bool, clock_due: bool = False, stop: bool = False) -> bool:
    """Whether to save right after `step`: on a stop request, else mid-epoch every `every_steps` steps
    (checkpoint.every_steps) or when checkpoint.every_minutes has passed (`clock_due`). Never at the end
    of an epoch: the epoch's own save follows its validation."""
    if stop:
        return True
    if epoch_done:
        return False
    return (every_steps > 0 and step % every_steps == 0) or clock_due


class Writer(Protocol):
    """What writes checkpoints: AsyncCheckpointer on the main rank, NullWriter elsewhere."""

    def stage(self, state: dict[str, Any], step: int) -> None: ...

    def save(self, state: dict[str, Any], step: int, best: bool) -> None: ...

    def wait(self) -> None: ...

    def close(self) -> None: ...


class NullWriter:
    """Off the main rank: the decisions are taken, nothing is written."""

    def stage(self, state: dict[str, Any], step: int) -> None:
        pass

    def save(self, state: dict[str, Any], step: int, best: bool) -> None:
        pass

    def wait(self) -> None:
        pass

    def close(self) -> None:
        pass


class Checkpointer:
    def __init__(self, cfg: CheckpointConfig, writer: Writer,
                 timer: Callable[[], AbstractContextManager[Any]]) -> None:
        """`timer()` wraps each blocking part (the run's "checkpoint" time bucket)."""
        self.cfg, self.writer, self.timer = cfg, writer, timer
        self.last_save = time.monotonic()

    def due(self, step: int, *, epoch_done: bool, clock_due: bool = False, stop: bool = False) -> bool:
        return due(step, every_steps=self.cfg.every_steps, epoch_done=epoch_done, clock_due=clock_due, stop=stop)

    def clock_due(self) -> bool:
        """Whether checkpoint.every_minutes has passed on this rank's clock since the last save."""
        every_s = self.cfg.every_minutes * 60
        return every_s > 0 and time.monotonic() - self.last_save >= every_s

    def stage(self, ts: TrainState) -> None:
        """Start copying the state to host memory while validation runs (it only reads the weights)."""
        with self.timer():  # blocks only if the previous write is still going
            self.writer.stage(ts.to_checkpoint(), ts.pos.step)

    def save(self, ts: TrainState, val: dict[str, float] | None = None) -> None:
        """Save the state at its position (best.pt too if `val` is the best so far); the write goes on in
        the background. Every rank calls it at the same step, which restarts the every_minutes clock."""
        self.last_save = time.monotonic()
        improved = ts.record_val(val)
        with self.timer():  # the blocking part: a copy into host memory
            self.writer.save(ts.to_checkpoint(val), ts.pos.step, improved)

    def wait(self) -> None:
        """Until the save in flight is durable; raises what its write raised (status 5)."""
        with self.timer():
            self.writer.wait()

    def close(self) -> None:
        """On the way out, also after an error: waits for the save in flight, logs a failed write."""
        self.writer.close()
