"""The optimizer from its config section, and the learning rate as a pure function of the step.

A pure schedule has no state to checkpoint: a resumed run recomputes the same lr for the same step.
LARS is timm's (`timm.optim.Lars`): it adapts and decays only the groups with weight decay, which are
exactly `param_groups`' weight matrices and kernels, so biases and norm parameters keep the plain lr.
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
    if cfg.name != "sgd":
        return _adaptive_optimizer(cfg, groups)
    fused = all(p.is_cuda for p in model.parameters())
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused or None)


def _adaptive_optimizer(cfg: OptimConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """optim.name=lars or adamw over `param_groups`' two groups (their state_dicts go into checkpoints)."""
    if cfg.name == "lars":
        from timm.optim import Lars  # timm's import takes ~1 s: only for LARS runs

        # always_adapt=False: the weight-decay-0 group (biases, norms) is neither adapted nor decayed
        return Lars(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, trust_coeff=cfg.trust_coeff,
                    trust_clip=cfg.lars_clip, always_adapt=False)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps)
    raise ValueError(f"unknown optim.name {cfg.name!r}")  # config.py refuses it first


def scaled_lr(cfg: OptimConfig, batch_size: int) -> float:
    """The linear scaling rule: optim.lr x batch_size / optim.lr_base_batch (optim.lr itself when that is 0).
    `batch_size` is the global batch, train.batch_size; this is the base lr `lr_at` schedules."""
    return cfg.lr * batch_size / cfg.lr_base_batch if cfg.lr_base_batch else cfg.lr


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
    if cfg.name == "poly":
        warmup = cfg.warmup_epochs * steps_per_epoch
        t = min(1.0, (step - warmup) / max(1.0, total_steps - warmup))
        return cfg.min_lr + (base_lr - cfg.min_lr) * (1 - t) ** cfg.power
    if cfg.name == "onecycle":  # FFCV's triangular: linear up to the peak, linear down to min_lr at the end
        peak = cfg.peak_epochs * steps_per_epoch
        if step < peak:
            return base_lr * (step + 1) / peak  # as warmup: no step at lr 0
        t = min(1.0, (step - peak) / max(1.0, total_steps - peak))
        return base_lr + (cfg.min_lr - base_lr) * t
    return base_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
