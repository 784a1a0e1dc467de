"""An exponential moving average of a model's weights, updated once per optimizer step (timm's ModelEmaV3).

The decay is a pure function of the optimizer step (warmup: min(decay, (1 + t) / (10 + t))), so the EMA's
only state is its weights: `state_dict()` goes into every checkpoint and a resumed EMA continues bitwise.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from trainer.model import unwrap


class ModelEma:
    """`module` holds the averaged weights (eval mode, no gradients) on the model's device."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")  # train.ema_decay's range says so first
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step `step` (1 for the first): with warmup the early,
        random weights fade fast, (1 + t) / (10 + t) being 0.18 at t = 1 and 0.99 at t = 890."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """ema = d ema + (1 - d) weights for every floating tensor (buffers too, e.g. batch-norm statistics);
        integer buffers (num_batches_tracked) are copied. Call after optimizer step `step` (1-based)."""
        d = self.decay_at(step)
        ema, live = self.module.state_dict(), unwrap(model).state_dict()
        floats = [k for k, v in ema.items() if v.is_floating_point()]
        torch._foreach_lerp_([ema[k] for k in floats], [live[k].detach() for k in floats], 1.0 - d)
        for k, v in ema.items():
            if not v.is_floating_point():
                v.copy_(live[k])

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
