"""A run's state as a checkpoint holds it: built in one place, read back in one place, and where it resumes.

The loop saves `TrainState.to_checkpoint()` and resumes with `restore()`; `trainer.evaluate` and
`trainer.export` read a checkpoint's config with `stored_config()`. There is no RNG state: every
random draw is derived from the seed (in the data plan) and the position (docs/fault_tolerance.md).

Batch s of an epoch is a pure function of the data plan (seed, world size, workers, batch size, ...);
under another plan (e.g. a new world size) the rest of a started epoch cannot be replayed, so the run
continues at the next epoch boundary, where every plan starts alike, and says so (`resume_position`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainer import config
from trainer.ema import ModelEma
from trainer.errors import CheckpointError

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
              train_samples: int, steps_per_epoch: int, accum_steps: int = 1) -> dict[str, int]:
    """Everything that decides which samples batch s of an epoch holds, as stored in a checkpoint
    (accum_steps only when it is > 1, so that plans written before it existed still match)."""
    return {"seed": seed, "world_size": world_size, "workers": workers, "batch_size": batch_size,
            "shuffle_buffer": shuffle_buffer, "train_samples": train_samples,
            "steps_per_epoch": steps_per_epoch, **({"accum_steps": accum_steps} if accum_steps > 1 else {})}


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



@dataclass
class TrainState:
    model: nn.Module  # unwrapped and uncompiled: its state_dict loads into any world size
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    plan: dict[str, int]  # resume.data_plan: what decides the samples of each batch
    config: dict[str, Any]  # the resolved config, as plain data
    pos: Position = field(default_factory=Position)
    best_top1: float | None = None
    run_id: str | None = None  # the W&B run, continued by a restart
    ema: ModelEma | None = None  # train.ema_decay > 0: the weights' moving average, saved and resumed with them

    def record_val(self, val: dict[str, float] | None) -> bool:
        """Note an epoch's validation metrics; whether their top-1 is the best so far (the first one is). With
        an EMA it is the better of val/top1 and val_ema/top1: best.pt holds both weights either way."""
        if val is None:
            return False
        top1 = max(val[k] for k in ("val/top1", "val_ema/top1") if k in val)
        improved = self.best_top1 is None or top1 > self.best_top1
        if improved:
            self.best_top1 = top1
        return improved

    def update_ema(self) -> None:
        """After each optimizer step (pos.step counts it): the EMA, if train.ema_decay, moves toward the weights."""
        if self.ema is not None:
            self.ema.update(self.model, self.pos.step)

    def to_checkpoint(self, val: dict[str, float] | None = None) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "step": self.pos.step, "epoch": self.pos.epoch,
            "step_in_epoch": self.pos.step_in_epoch, "data": self.plan, "val": val,
            "best_val_top1": self.best_top1, "config": self.config, "wandb_run_id": self.run_id,
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def restore(self, state: dict[str, Any], source: str) -> None:
        """Load a checkpoint written by `to_checkpoint`; the position follows `resume_position`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._restore_scaler(state.get("scaler") or {}, source)
        if self.ema is not None:
            if state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            else:  # train.ema_decay switched on for a run that had none: the average starts here
                log.warning("%s holds no EMA weights (train.ema_decay was 0): the EMA starts from the resumed "
                            "weights at step %d", source, state["step"])
                self.ema.load_state_dict(self.model.state_dict())
        self.pos = resume_position(state, self.plan, source)
        self.run_id, self.best_top1 = state.get("wandb_run_id"), state.get("best_val_top1")
        log.info("resumed from %s at step %d (epoch %d, batch %d)", source, self.pos.step, self.pos.epoch,
                 self.pos.step_in_epoch)

    def _restore_scaler(self, saved: dict[str, Any], source: str) -> None:
        """GradScaler's state, where both sides have one: a bf16 or fp32 run saves {} (its scaler is off),
        which an enabled scaler refuses, so a run resumed with amp=fp16 starts loss scaling afresh."""
        if saved and self.scaler.is_enabled():
            self.scaler.load_state_dict(saved)
        elif self.scaler.is_enabled():
            log.info("%s has no loss-scaling state (written without amp=fp16): GradScaler starts at scale %g",
                     source, self.scaler.get_scale())
        elif saved:
            log.info("%s holds fp16 loss-scaling state (scale %g); this run does not scale losses (amp is not "
                     "fp16), so it is not used", source, saved.get("scale", float("nan")))


def stored_weights(state: dict[str, Any], source: str, ema: bool = False) -> dict[str, Any]:
    """The model's state_dict from a checkpoint, or with `ema` its EMA's (train.ema_decay); a CheckpointError
    naming `source` (e.g. "checkpoint PATH") when the checkpoint holds none."""
    key = "ema" if ema else "model"
    weights = state.get(key)
    if not isinstance(weights, dict):
        hint = " (it was trained with train.ema_decay=0: leave out --ema)" if ema else ""
        raise CheckpointError(f"{source} holds no {'EMA ' if ema else ''}weights ('{key}'){hint}")
    return weights


def stored_config(state: dict[str, Any], source: str, overrides: Sequence[str] = ()) -> config.Config:
    """The run config a checkpoint was written with, `key=value` overrides on top; a ConfigError if it
    has none or it does not load (the checkpoint is data: its config goes through every check)."""
    tree = state.get("config")
    if not isinstance(tree, dict):
        raise config.ConfigError(f"checkpoint {source} holds no run config ('config')")
    return config.from_dict(tree, overrides)
