"""The optimizer from its config section, and the learning rate as a pure function of the step.

A pure schedule has no state to checkpoint: a resumed run recomputes the same lr for the same step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.config import OptimConfig, ScheduleConfig
from trainer.model import param_groups


def build_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD; fused (one kernel for all parameters) when they are on CUDA: GradScaler then hands it the scale
    and the inf check as tensors, so an fp16 step needs no `.item()` host sync."""
    groups = param_groups(model, cfg.weight_decay)
    fused = all(p.is_cuda for p in model.parameters())
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused or None)


def lr_at(step: int, steps_per_epoch: int, total_steps: int, base_lr: float, cfg: ScheduleConfig) -> float:
    """The learning rate for optimizer step `step` (0-based)."""
    epoch = step / steps_per_epoch
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return base_lr * (step + 1) / (cfg.warmup_epochs * steps_per_epoch)
    if cfg.name == "step":
        return base_lr * cfg.gamma ** math.floor(epoch / cfg.step_epochs)
    if cfg.name == "cosine":
        warmup = cfg.warmup_epochs * steps_per_epoch
        t = min(1.0, (step - warmup) / max(1.0, total_steps - warmup))
        return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
    return base_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
