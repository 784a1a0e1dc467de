"""Validation over a split: every sample counted once across ranks, summed with one all-reduce.

Shared by the training loop (after each epoch) and `python -m trainer.evaluate`, so that both
report the same numbers for the same weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

from trainer import dist, step
from trainer.config import DataConfig
from trainer.data.loader import eval_loader
from trainer.data.manifest import Split
from trainer.data.transforms import Normalize
from trainer.errors import DataError
from trainer.model import unwrap


def eval_data(cfg: DataConfig) -> DataConfig:
    """The data config the evaluation loader reads: crop data.eval_image_size (or data.image_size) from a
    short side of data.eval_resize (or the crop x 256/224)."""
    return dataclasses.replace(cfg, image_size=cfg.eval_size, eval_image_size=0, eval_resize=cfg.eval_resize_px)


def validate(model: torch.nn.Module, split: Split, cfg: DataConfig, info: dist.DistInfo,
             normalize: Normalize, autocast: Callable[[], AbstractContextManager],
             local_batch: int, num_classes: int, per_class: torch.Tensor | None = None) -> dict[str, float]:
    """Loss, top-1 and top-5 over the whole split (this rank evaluates its share); on every rank.
    Samples that cannot be decoded are logged and left out of every figure, val/count included.
    Runs the uncompiled module, each batch padded to `local_batch` (step.evaluate): no recompiles, no retuning.
    With `per_class` ((2, classes) zeros on the device) it is filled with each class's count and top-1 hits."""
    loader = eval_loader(split, eval_data(cfg), info.device, normalize.memory_format == torch.channels_last,
                         local_batch=local_batch, rank=info.rank, world_size=info.world_size, num_classes=num_classes)
    # no DDP collectives (ranks hold different batch counts), and eager, never the compiled module: eval
    # mode and no_grad would each make torch.compile recompile
    sums = step.evaluate(unwrap(model), loader, normalize, autocast, local_batch, per_class)
    totals = dist.all_reduce_sum(sums, info)
    if per_class is not None:
        dist.all_reduce_sum(per_class, info)
    loss_sum, top1, top5, count = totals.tolist()
    if count == 0:
        raise DataError("the validation split has no samples: nothing to evaluate")
    return {"val/loss": loss_sum / count, "val/top1": top1 / count, "val/top5": top5 / count,
            "val/count": int(count)}
