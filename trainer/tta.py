"""Test-time augmentation and per-class accuracy for `python -m trainer.evaluate`.

--tta flip averages the softmax of the centre crop and its mirror image; --tta ten_crop that of the four
corner crops, the centre crop and their mirrors, taken from the resized image's central square (Krizhevsky
et al. 2012, section 4.1: "averaging the predictions made by the network's softmax layer on the ten patches").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from trainer.config import DataConfig

TTA_MODES = ("none", "flip", "ten_crop")


def ten_crops(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """The corners (top left, top right, bottom left, bottom right) and the centre, `size` square, of an
    (N, C, H, W) batch; the centre is placed as the evaluation centre crop places it."""
    height, width = x.shape[-2:]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    corners = [(0, 0), (0, width - size), (height - size, 0), (height - size, width - size), (top, left)]
    return [x[..., t:t + size, s:s + size] for t, s in corners]


def views(x: torch.Tensor, mode: str, size: int) -> list[torch.Tensor]:
    """The batches whose predictions are averaged: flip = [x, mirror]; ten_crop = 5 crops + their mirrors."""
    if mode == "flip":
        return [x, x.flip(-1)]
    if mode == "ten_crop":
        crops = ten_crops(x, size)
        return crops + [c.flip(-1) for c in crops]
    return [x]


class TTA(nn.Module):
    """The model under test-time augmentation: log of the mean softmax over the views, so that the loss
    (cross entropy) is the averaged prediction's and top-k ranks the averaged probabilities."""

    def __init__(self, net: nn.Module, mode: str, size: int) -> None:
        super().__init__()
        self.net, self.mode, self.size = net, mode, size  # not `.module`: validate() would unwrap it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # log(mean(softmax)) as a logsumexp of log-softmaxes: a probability that underflows to 0 in one view
        # gives no -inf
        log_probs = torch.stack([self.net(v).float().log_softmax(1) for v in views(x, self.mode, self.size)])
        return torch.logsumexp(log_probs, 0) - math.log(len(log_probs))


def tta_data(cfg: DataConfig, mode: str) -> DataConfig:
    """The evaluation data for a TTA mode: ten_crop needs the resized image's central square (eval_resize
    pixels), from which the crops are cut; flip and none take the usual centre crop."""
    if mode != "ten_crop":
        return cfg
    side = cfg.eval_resize_px
    return dataclasses.replace(cfg, image_size=side, eval_image_size=0, eval_resize=side)


def per_class_report(counts: torch.Tensor, class_names: tuple[str, ...] | list[str], worst: int = 10) -> dict[str, Any]:
    """Top-1 of every class (None where a class has no sample) and the `worst` classes, lowest first."""
    n, hits = counts.tolist()
    top1 = [h / c if c else None for c, h in zip(n, hits)]
    ranked = sorted((t, i) for i, t in enumerate(top1) if t is not None)[:worst]
    name = (lambda i: class_names[i]) if len(class_names) == len(top1) else str
    return {"val/per_class_top1": top1,
            "val/worst_classes": [{"class": i, "name": name(i), "top1": t, "count": int(n[i])} for t, i in ranked]}
