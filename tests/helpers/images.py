"""Photo-like test JPEGs and the small conversions the pixel tests compare with."""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
import torch
from PIL import Image


def photo(h: int, w: int, seed: int, subsampling: str = "420") -> bytes:
    """A photo-like JPEG: smooth shading, mid-frequency texture, hard edges and mild noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((4, 90), (24, 40), (96, 20)):  # coarse to fine random fields, bicubic-upsampled
        small = rng.uniform(-amp, amp, (cells, max(2, cells * w // h), 3)).astype(np.float32)
        img += np.stack([np.asarray(Image.fromarray(small[..., c]).resize((w, h), Image.BICUBIC))
                         for c in range(3)], -1)
    for _ in range(6):  # flat rectangles: edges
        y, x = rng.integers(0, h - h // 4), rng.integers(0, w - w // 4)
        img[y:y + h // 4, x:x + w // 5] = rng.uniform(-100, 100, 3)
    img = np.clip(img + 128 + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    return simplejpeg.encode_jpeg(img, quality=90, colorspace="RGB", colorsubsampling=subsampling)


def pil_rgb(jpeg: bytes) -> Image.Image:
    return Image.open(io.BytesIO(jpeg)).convert("RGB")


def hwc(chw: torch.Tensor) -> np.ndarray:
    return chw.permute(1, 2, 0).numpy().astype(np.int32)


def levels(normalised: torch.Tensor) -> torch.Tensor:
    """A normalised float batch (Normalize's, or data.decode=gpu's) back in 0-255 pixel levels, unrounded."""
    from trainer.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    return normalised.float() * std + mean


def cpu_decoder(size: int):
    """data.decode=gpu's decoder run on the CPU, with torchvision's CPU decode standing in for nvJPEG."""
    from trainer.data import gpu_decode

    return gpu_decode.GpuDecoder(size, torch.device("cpu"), decode=gpu_decode.torchvision_decode)
