"""A run's state as a checkpoint holds it: built in one place and read back in one place.

The loop saves `TrainState.to_checkpoint()` and resumes with `restore()`; `trainer.evaluate` and
`trainer.export` read a checkpoint's config with `stored_config()`. There is no RNG state: every
random draw is derived from the seed (in the data plan) and the position (docs/fault_tolerance.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainer import config
from trainer.resume import Position, resume_position

log = logging.getLogger(__name__)


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

    def record_val(self, val: dict[str, float] | None) -> bool:
        """Note an epoch's validation metrics; whether val/top1 is the best so far (the first one is)."""
        improved = val is not None and (self.best_top1 is None or val["val/top1"] > self.best_top1)
        if improved:
            assert val is not None
            self.best_top1 = val["val/top1"]
        return improved

    def to_checkpoint(self, val: dict[str, float] | None = None) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "step": self.pos.step, "epoch": self.pos.epoch,
            "step_in_epoch": self.pos.step_in_epoch, "data": self.plan, "val": val,
            "best_val_top1": self.best_top1, "config": self.config, "wandb_run_id": self.run_id,
        }

    def restore(self, state: dict[str, Any], source: str) -> None:
        """Load a checkpoint written by `to_checkpoint`; the position follows resume.resume_position."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.pos = resume_position(state, self.plan, source)
        self.run_id, self.best_top1 = state.get("wandb_run_id"), state.get("best_val_top1")
        log.info("resumed from %s at step %d (epoch %d, batch %d)", source, self.pos.step, self.pos.epoch,
                 self.pos.step_in_epoch)


def stored_config(state: dict[str, Any], source: str, overrides: Sequence[str] = ()) -> config.Config:
    """The run config a checkpoint was written with, `key=value` overrides on top; a ConfigError if it
    has none or it does not load (the checkpoint is data: its config goes through every check)."""
    tree = state.get("config")
    if not isinstance(tree, dict):
        raise config.ConfigError(f"checkpoint {source} holds no run config ('config')")
    return config.from_dict(tree, overrides)
