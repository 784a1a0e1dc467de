"""Where a resumed run continues: the checkpoint's position, kept exactly when its data plan allows.

Batch s of an epoch is a pure function of the data plan (seed, world size, workers, batch size, ...);
under another plan (e.g. a new world size) the rest of a started epoch cannot be replayed, so the run
continues at the next epoch boundary, where every plan starts alike, and says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Position:
    """Where the run is: optimizer steps taken, and the next batch of which epoch."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0

    def advance(self) -> None:
        """One optimizer step taken."""
        self.step += 1
        self.step_in_epoch += 1

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch = self.epoch + 1, 0


def data_plan(*, seed: int, world_size: int, workers: int, batch_size: int, shuffle_buffer: int,
              train_samples: int, steps_per_epoch: int) -> dict[str, int]:
    """Everything that decides which samples batch s of an epoch holds, as stored in a checkpoint."""
    return {"seed": seed, "world_size": world_size, "workers": workers, "batch_size": batch_size,
            "shuffle_buffer": shuffle_buffer, "train_samples": train_samples,
            "steps_per_epoch": steps_per_epoch}


def resume_position(state: dict[str, Any], plan: dict[str, int], source: str = "the checkpoint") -> Position:
    """The position to continue from: the checkpoint's, or the next epoch boundary under a new plan.

    A move to the boundary also sets the step to epoch x steps_per_epoch, so that the learning-rate
    schedule (a function of the step) stays aligned with the epochs and the run ends where it would have.
    """
    pos = Position(state["step"], state["epoch"], state["step_in_epoch"])
    old = state.get("data") or {}
    if old == plan:
        return pos
    changed = ", ".join(f"{k} {old.get(k, '?')} -> {plan[k]}" for k in plan if old.get(k) != plan[k])
    spe = plan["steps_per_epoch"]
    if pos.step_in_epoch and pos.step_in_epoch >= old.get("steps_per_epoch", pos.step_in_epoch + 1):
        pos.step_in_epoch = spe  # all of the epoch's batches were taken; its end-of-epoch work was not done
    elif pos.step_in_epoch:
        log.warning(
            "%s was written under another data plan (%s): the rest of epoch %d (from batch %d) cannot be "
            "replayed under this one, so training continues at the start of epoch %d. Resume with the "
            "checkpoint's world size, data.workers, train.batch_size, data.shuffle_buffer and seed to keep "
            "the exact position.", source, changed, pos.epoch, pos.step_in_epoch, pos.epoch + 1,
        )
        pos.epoch, pos.step_in_epoch = pos.epoch + 1, 0
    else:
        log.info("%s was written under another data plan (%s) at an epoch boundary: continuing exactly "
                 "at the start of epoch %d", source, changed, pos.epoch)
    aligned = pos.epoch * spe + pos.step_in_epoch
    if aligned != pos.step:
        log.warning("step %d becomes %d: epoch %d starts at step %d under this plan", pos.step, aligned,
                    pos.epoch, pos.epoch * spe)
        pos.step = aligned
    return pos
