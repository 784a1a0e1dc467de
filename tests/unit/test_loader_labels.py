"""Images and labels stay together through the whole input pipeline.

The synthetic fixture codes each class in the hue of its images (data_prep/synthetic.py: class k has hue
k/classes), so every decoded, cropped, flipped image must still show its own label's hue: a loader
that paired an image with another sample's label would fail here, whatever the shuffle did. Checked on
the CPU decode path through worker processes, and on the data.decode=gpu path (its plans and packed
bytes, decoded by torchvision's CPU decoder: the same code the GPU runs).
"""

from __future__ import annotations

import colorsys
import random
from pathlib import Path

import torch

from trainer.config import DataConfig
from trainer.data.loader import _batch, _read, eval_loader, train_loader
from trainer.data.manifest import load_manifest
from trainer.data.transforms import TrainPreset

from helpers.common import CLASSES
from helpers.images import cpu_decoder, levels


def hue_class(image: torch.Tensor) -> int:
    """The class whose hue is nearest to the mean colour of a (3, H, W) uint8 image."""
    r, g, b = (image.float().mean(dim=(1, 2)) / 255).tolist()
    hue = colorsys.rgb_to_hsv(r, g, b)[0]
    return round(hue * CLASSES) % CLASSES


def test_every_training_image_shows_its_labels_hue(shards: Path):
    manifest = load_manifest(str(shards))
    cfg = DataConfig(root=str(shards), workers=2, shuffle_buffer=16, image_size=32, eval_resize=36)
    steps = manifest.train.num_samples // 8
    batches = list(train_loader(manifest.train, cfg, torch.device("cpu"), seed=5, epoch=1, start_step=0,
                                     steps=steps, local_batch=8, rank=0, world_size=1, num_classes=CLASSES))
    labels = torch.cat([y for _, y in batches]).tolist()
    shown = [hue_class(x) for images, _ in batches for x in images]
    assert len(labels) == manifest.train.num_samples and len(set(labels)) == CLASSES
    wrong = [i for i, (a, b) in enumerate(zip(shown, labels)) if a != b]
    assert not wrong, f"images {wrong[:10]} show another class's hue than their label"


def test_every_validation_image_shows_its_labels_hue(shards: Path):
    manifest = load_manifest(str(shards))
    cfg = DataConfig(root=str(shards), workers=2, image_size=32, eval_resize=36)
    assert manifest.val is not None
    batches = list(eval_loader(manifest.val, cfg, torch.device("cpu"), local_batch=5, rank=0, world_size=1,
                                    num_classes=CLASSES))
    pairs = [(hue_class(x), int(y)) for images, labels in batches for x, y in zip(images, labels)]
    assert len(pairs) == manifest.val.num_samples and all(a == b for a, b in pairs), pairs


def test_the_gpu_plan_path_keeps_images_and_labels_together(shards: Path):
    manifest = load_manifest(str(shards))
    split = manifest.train
    samples = list(_read(split, list(range(len(split.urls))), CLASSES))
    preset = TrainPreset(32)
    for start in range(0, len(samples), 8):
        items = samples[start:start + 8]
        packed = _batch(preset, items, [random.Random(i) for i in range(len(items))], "gpu")
        images, labels = cpu_decoder(32)(packed)
        images = levels(images)
        assert labels.tolist() == [s.label for s in items]
        assert [hue_class(x) for x in images] == labels.tolist()
