"""Persistent training workers (data.persistent_workers): one DataLoader serving several epochs gives
exactly the batches that a DataLoader started anew for each epoch gives, from any resumed position,
also when the number of batches per epoch is not a multiple of the number of workers (the DataLoader's
round robin then starts the next epoch at another worker).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.config import DataConfig
from trainer.data.loader import train_loader
from trainer.data.manifest import load_manifest

from helpers.common import CLASSES

STEPS, BATCH = 6, 8  # the fixture's 48 training images


@pytest.mark.parametrize("workers, start", [(4, 2), (4, 0), (3, 5), (0, 1)])
def test_one_loader_for_three_epochs_equals_three_loaders(shards: Path, workers: int, start: int):
    manifest = load_manifest(str(shards))
    cfg = DataConfig(root=str(shards), workers=workers, shuffle_buffer=16, image_size=32, eval_resize=36)
    common = dict(seed=7, steps=STEPS, local_batch=BATCH, rank=0, world_size=1, num_classes=CLASSES)
    cpu = torch.device("cpu")
    persistent = list(train_loader(manifest.train, cfg, cpu, epoch=1, start_step=start, end_epoch=4, **common))
    anew = [b for epoch in (1, 2, 3)
            for b in train_loader(manifest.train, cfg, cpu, epoch=epoch, start_step=start if epoch == 1 else 0,
                                       **common)]
    assert len(persistent) == len(anew) == 3 * STEPS - start
    for i, ((x, y), (ax, ay)) in enumerate(zip(persistent, anew)):
        assert torch.equal(y, ay) and torch.equal(x, ax), f"batch {i} differs"
