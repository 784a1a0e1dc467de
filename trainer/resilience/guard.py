"""What every rank checks after each step, agreed on by all ranks in one small collective.

A stop signal (SIGTERM/SIGUSR1/Ctrl-C), a non-finite loss, and whether to save (the checkpointer's
rule, its every_minutes clock included) are decided together, so every rank takes the same decision
at the same step. The collective runs on
CPU tensors (gloo), and on CUDA the loss is read without stalling the GPU queue.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from trainer import dist

log = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM/SIGUSR1 (preemption, a time limit) or Ctrl-C; acted on at the next step boundary.

    A second Ctrl-C is the way out when saving is not wanted: KeyboardInterrupt, exit status 130.
    """

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            if self.requested:
                raise KeyboardInterrupt
            log.warning("Ctrl-C: saving a checkpoint at the next step, then stopping "
                        "(press Ctrl-C again to stop at once without saving)")
        self.requested = True


def ignore_stop_signals() -> None:
    """Once a rank knows how it ends, a late SIGTERM (torchrun stopping the rest of the group when one
    rank has exited) must not turn its exit status into "killed by SIGTERM". SIG_IGN, unlike a Python
    handler, survives interpreter shutdown, which is where such a signal usually lands. Safe because the
    way out (lifecycle.exit) is bounded: nothing after this point can wait forever."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


class LossWatch:
    """Counts non-finite losses, and how many in a row, on the device; the host reads them without
    stalling the GPU.

    On the CPU the counts are exact at every step. On CUDA a `.item()` per step would be a sync point
    that drains the queue of launched kernels, so the counts are copied to pinned memory and read once
    the GPU has produced them (a step or two late); `exact()` waits, before a checkpoint is written.
    """

    def __init__(self, device: torch.device) -> None:
        self.counts = torch.zeros(2, dtype=torch.int64, device=device)  # [non-finite so far, in a row]
        self.seen, self.streak = 0, 0  # as last read by the host
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.host = torch.zeros(2, dtype=torch.int64).pin_memory()
            self.event = torch.cuda.Event()
            self.in_flight = False

    def add(self, loss: torch.Tensor) -> None:
        bad = (~torch.isfinite(loss.detach())).any().long()
        self.counts[1] = (self.counts[1] + 1) * bad
        self.counts[0] += bad

    def new(self) -> tuple[int, int]:
        """(non-finite losses since the last report, the current run of them) as far as the host can see."""
        if not self.cuda:
            return self._report(self.counts.tolist())
        read = None
        if self.in_flight and self.event.query():
            read, self.in_flight = self.host.tolist(), False
        if not self.in_flight:
            self.host.copy_(self.counts, non_blocking=True)
            self.event.record()
            self.in_flight = True
        return self._report(read) if read else (0, self.streak)

    def exact(self) -> tuple[int, int]:
        """Like `new`, counting every loss added so far (waits for the device on CUDA)."""
        self.in_flight = False  # a copy still on its way is superseded by this read
        return self._report(self.counts.tolist())

    def _report(self, counts: list[int]) -> tuple[int, int]:
        total, self.streak = counts
        fresh, self.seen = max(0, total - self.seen), max(total, self.seen)
        return fresh, self.streak


class SaveRule(Protocol):
    """When to save (resilience/checkpointer.py's Checkpointer)."""

    def due(self, step: int, *, epoch_done: bool, clock_due: bool = False, stop: bool = False) -> bool: ...

    def clock_due(self) -> bool: ...


@dataclass(frozen=True)
class Verdict:
    stop: bool  # some rank got SIGTERM/SIGUSR1/Ctrl-C: save and exit
    nonfinite: int  # non-finite losses since the previous verdict (on the rank with most)
    streak: int  # non-finite losses in a row, up to this step (on the rank with most)
    save: bool  # save now (a stop, checkpoint.every_steps, or every_minutes on some rank's clock)


class StepGuard:
    """`check()` after every step: one all-reduce of four integers over gloo (a CPU sync point between
    ranks, which DDP keeps in lock-step anyway; it never waits on the GPU queue)."""

    def __init__(self, info: dist.DistInfo, stop: StopFlag, rule: SaveRule) -> None:
        self.info, self.stop, self.rule = info, stop, rule
        self.watch = LossWatch(info.device)

    def check(self, loss: torch.Tensor, step: int, epoch_done: bool) -> Verdict:
        """The verdict all ranks agree on for `step`, the step that produced `loss`."""
        self.watch.add(loss)
        exact = epoch_done or self.rule.due(step, epoch_done=epoch_done) or not self.watch.cuda  # a save follows
        bad, streak = self.watch.exact() if exact else self.watch.new()
        stop, bad, streak, any_due = dist.agree_max(
            [int(self.stop.requested), bad, streak, int(self.rule.clock_due())], self.info)
        if (stop or any_due) and not exact:  # a checkpoint follows: never write one after an unseen NaN
            more, streak = dist.agree_max(list(self.watch.exact()), self.info)
            bad += more
        save = self.rule.due(step, epoch_done=epoch_done, clock_due=any_due > 0, stop=stop > 0)
        return Verdict(stop=stop > 0, nonfinite=bad, streak=streak, save=save)

    def stop_requested(self) -> bool:
        """Whether any rank got a stop signal (a collective: call it on every rank at the same point)."""
        return dist.agree_max([int(self.stop.requested)], self.info)[0] > 0
