"""What the loss sees of a training micro-batch: the labels as they are (`Plain`), or Mixup and CutMix on the
device with label smoothing folded into soft targets (`Mixer`, timm's Mixup in batch mode). Both have one
interface, `prepare(images, labels, step=, epoch=, rank=)` -> (inputs, loss targets) and `loss(logits,
targets)`, so the loop never asks whether mixing is on.

Every draw comes from a generator seeded by (seed, "mix", step, rank), the rank being the micro-batch's
virtual rank (gradient accumulation), so a resumed run mixes exactly as before and accumulating on fewer
ranks mixes as more ranks would. A skipped sample (label IGNORE) is neither mixed into another nor mixed.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import MixConfig
from trainer.seeding import derive_seed
from trainer.step import IGNORE


class Mixed(NamedTuple):
    images: torch.Tensor  # the batch, mixed (a new tensor; rows labelled IGNORE are unchanged)
    targets: torch.Tensor  # (N, classes) float: one per valid row, all zeros for IGNORE rows
    weight: torch.Tensor  # (N,) float: 1 for valid rows, 0 for IGNORE rows (their share of the loss)
    lam: float  # the weight of each row's own image (1.0: not mixed)


def cutmix_box(lam: float, height: int, width: int, cy: int, cx: int) -> tuple[int, int, int, int]:
    """timm's rand_bbox: a box of side sqrt(1 - lam) x the image's, centred at (cy, cx), clipped to the
    image: (top, bottom, left, right)."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    return (min(max(cy - ch // 2, 0), height), min(max(cy + ch // 2, 0), height),
            min(max(cx - cw // 2, 0), width), min(max(cx + cw // 2, 0), width))


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """torch's CrossEntropyLoss(label_smoothing=s) targets: 1 - s + s/C on the label, s/C elsewhere; zero rows
    for IGNORE."""
    valid = labels != IGNORE
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    targets.scatter_(1, labels.clamp_min(0).unsqueeze(1), 1.0 - smoothing + off)
    return targets * valid.unsqueeze(1)


class Mixer:
    """mix.* on a normalised float batch: `mixer(images, labels, step=, epoch=)` -> Mixed; the loss is
    `soft_cross_entropy(logits, mixed.targets, mixed.weight)`."""

    def __init__(self, cfg: MixConfig, num_classes: int, label_smoothing: float, seed: int) -> None:
        self.cfg, self.num_classes, self.smoothing, self.seed = cfg, num_classes, label_smoothing, seed

    def active(self, epoch: int) -> bool:
        return self.cfg.enabled and not (self.cfg.off_epoch and epoch >= self.cfg.off_epoch)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, *, step: int, epoch: int, rank: int = 0) -> Mixed:
        """`labels` on the host, as the loader gives them: which rows are valid is read there, not on the
        device (that would be a sync point every step)."""
        valid = torch.nonzero(labels.cpu() != IGNORE).flatten().tolist()
        labels = labels.to(images.device, non_blocking=True)
        targets = smooth_one_hot(labels, self.num_classes, self.smoothing)
        weight = (labels != IGNORE).float()
        # Python's generator: torch's Beta distribution takes no generator
        rng = random.Random(derive_seed(self.seed, "mix", step, rank))
        if not self.active(epoch) or rng.random() >= self.cfg.prob or len(valid) < 2:
            return Mixed(images, targets, weight, 1.0)
        cutmix = self.cfg.cutmix_alpha > 0 and (self.cfg.mixup_alpha == 0 or rng.random() < self.cfg.switch_prob)
        alpha = self.cfg.cutmix_alpha if cutmix else self.cfg.mixup_alpha
        lam = rng.betavariate(alpha, alpha)
        rows = torch.tensor(valid).to(images.device, non_blocking=True)
        partners = torch.tensor(rng.sample(valid, len(valid))).to(images.device, non_blocking=True)  # valid rows
        out = images.clone()
        if cutmix:
            height, width = images.shape[-2:]
            top, bottom, left, right = cutmix_box(lam, height, width, rng.randrange(height), rng.randrange(width))
            lam = 1.0 - (bottom - top) * (right - left) / (height * width)  # the box as clipped
            box = out[rows]
            box[..., top:bottom, left:right] = images[partners][..., top:bottom, left:right]
            out[rows] = box
        else:
            out[rows] = images[rows] * lam + images[partners] * (1.0 - lam)
        targets[rows] = targets[rows] * lam + targets[partners] * (1.0 - lam)
        return Mixed(out, targets, weight, lam)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor, *, step: int, epoch: int,
                rank: int) -> tuple[torch.Tensor, Mixed]:
        mixed = self(images, labels, step=step, epoch=epoch, rank=rank)
        return mixed.images, mixed

    @staticmethod
    def loss(logits: torch.Tensor, mixed: Mixed) -> torch.Tensor:
        return soft_cross_entropy(logits, mixed.targets, mixed.weight)


class Plain:
    """No mixing: the labels go to the device as they are; the loss is cross entropy with train.label_smoothing,
    IGNORE rows left out."""

    def __init__(self, label_smoothing: float) -> None:
        self.criterion = nn.CrossEntropyLoss(ignore_index=IGNORE, label_smoothing=label_smoothing)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor, *, step: int, epoch: int,
                rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        return images, labels.to(images.device, non_blocking=True)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits, labels)


def build_mixing(cfg: MixConfig, num_classes: int, label_smoothing: float, seed: int) -> Mixer | Plain:
    """mix.* and train.label_smoothing -> a Mixer when an alpha is > 0, else Plain."""
    return Mixer(cfg, num_classes, label_smoothing, seed) if cfg.enabled else Plain(label_smoothing)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The mean over rows with weight 1 of -sum(targets x log_softmax(logits)); IGNORE rows (weight 0) add
    nothing. Unmixed, it equals CrossEntropyLoss(ignore_index=IGNORE, label_smoothing=s)."""
    per_row = -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    return (per_row * weight).sum() / weight.sum().clamp_min(1.0)
