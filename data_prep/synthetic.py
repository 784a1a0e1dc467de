"""A small, learnable, ImageNet-shaped image-folder dataset for tests and smoke runs.

Class k is a strongly saturated colour with hue k/classes, so any crop keeps its class; per-image
brightness, a darker or lighter patch, noise and size (80-160 px sides) keep images distinct.
Output: DIR/train/<wnid>/<wnid>_<n>.JPEG and DIR/val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG.
"""

from __future__ import annotations

import colorsys
import os

import numpy as np
import simplejpeg


def wnid(k: int) -> str:
    """WNID-style folder name; sorted order equals class order."""
    return f"n{k:08d}"


def make_image(rng: np.random.Generator, k: int, classes: int,
               size: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB uint8 image of class k (hue k/classes) with per-image jitter."""
    h, w = size or (int(rng.integers(80, 161)), int(rng.integers(80, 161)))
    value = rng.uniform(0.6, 1.0)
    rgb = np.array(colorsys.hsv_to_rgb(k / classes, rng.uniform(0.8, 1.0), value)) * 255
    img = np.empty((h, w, 3), np.float32)
    img[:] = rgb
    # A patch of the same hue at another brightness: texture that does not change the class.
    y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    img[y:y + h // 2, x:x + w // 2] *= rng.uniform(0.6, 1.2)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(img: np.ndarray, quality: int = 85) -> bytes:
    return simplejpeg.encode_jpeg(img, quality=quality, colorspace="RGB", colorsubsampling="420")


def write_synthetic(out: str, classes: int = 10, train_per_class: int = 60,
                    val_per_class: int = 10, seed: int = 0) -> dict[str, int]:
    """Write the dataset; returns images written per split. Same seed, same bytes."""
    counts = {"train": 0, "val": 0}
    for k in range(classes):
        d = os.path.join(out, "train", wnid(k))
        os.makedirs(d, exist_ok=True)
        for n in range(train_per_class):
            # One generator per image: the bytes of an image do not depend on the others.
            rng = np.random.default_rng([seed, 0, k, n])
            with open(os.path.join(d, f"{wnid(k)}_{n}.JPEG"), "wb") as f:
                f.write(encode(make_image(rng, k, classes)))
            counts["train"] += 1
    # Val numbering is shuffled across classes, as in the real val set.
    order = np.random.default_rng([seed, 1]).permutation(classes * val_per_class)
    for i, j in enumerate(order):
        k, n = divmod(int(j), val_per_class)
        d = os.path.join(out, "val", wnid(k))
        os.makedirs(d, exist_ok=True)
        rng = np.random.default_rng([seed, 2, k, n])
        with open(os.path.join(d, f"ILSVRC2012_val_{i + 1:08d}.JPEG"), "wb") as f:
            f.write(encode(make_image(rng, k, classes)))
        counts["val"] += 1
    return counts
