"""Train and eval presets: JPEG bytes -> uint8 HWC arrays; normalisation happens later, on the device.

Augmentation randomness comes from a `random.Random` the caller derives from (seed, epoch, key), so
a sample's crop does not depend on which samples were decoded before it (exact resume, any worker).
"""

from __future__ import annotations

import io
import math
import random

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)


def crop_params(rng: random.Random, height: int, width: int) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawing from `rng`: (top, left, h, w)."""
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif in_ratio > RATIO[1]:
        h, w = height, int(round(height * RATIO[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _open_rgb(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    return img if img.mode == "RGB" else img.convert("RGB")


class TrainPreset:
    """RandomResizedCrop(size, scale 0.08-1, ratio 3/4-4/3) and a horizontal flip, on JPEG bytes."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, data: bytes, rng: random.Random) -> np.ndarray:
        img = _open_rgb(data)
        top, left, h, w = crop_params(rng, img.height, img.width)
        out = img.resize((self.size, self.size), Image.BILINEAR, box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        return np.asarray(out)


class EvalPreset:
    """Resize the short side to `resize`, then centre-crop `size`, as torchvision's eval preset."""

    def __init__(self, size: int, resize: int) -> None:
        self.size, self.resize = size, resize

    def __call__(self, data: bytes, rng: random.Random | None = None) -> np.ndarray:
        img = _open_rgb(data)
        scale = self.resize / min(img.width, img.height)
        new_w = self.resize if img.width <= img.height else int(img.width * scale)
        new_h = self.resize if img.height <= img.width else int(img.height * scale)
        img = img.resize((new_w, new_h), Image.BILINEAR)
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        return np.asarray(img.crop((left, top, left + self.size, top + self.size)))


def collate(images: list[np.ndarray], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack HWC uint8 images into an NCHW uint8 batch stored channels-last (a free permute)."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return batch, torch.tensor(labels, dtype=torch.int64)


class Normalize:
    """uint8 NCHW batch -> normalised float on the device, in the model's memory format."""

    def __init__(self, device: torch.device, channels_last: bool) -> None:
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float()
        x = x.sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=self.memory_format)
