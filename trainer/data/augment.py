"""TrivialAugmentWide, RandAugment and random erasing on a uint8 crop, every draw from the sample's own
`random.Random` (never torch's global RNG), so a sample's pixels do not depend on the worker or the resume.
Drawing (`Augment.draw`, in the worker) and applying (`Draw.apply`, on the CPU or the GPU) are apart, so that
data.decode=gpu augments the same samples alike.

The op tables and magnitude bins mirror torchvision.transforms.v2's TrivialAugmentWide and RandAugment
(tests/unit/test_augment.py compares them); the ops are torchvision.transforms.v2.functional's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import NamedTuple

import torch
from torchvision.transforms.v2 import functional as F

from trainer.config import DataConfig

NUM_BINS = 31  # torchvision's num_magnitude_bins
MEAN_RGB = (124, 116, 104)  # ImageNet's mean in uint8: the erased box normalises to 0, as RandomErasing(value=0)
ERASE_SCALE, ERASE_RATIO = (0.02, 0.33), (0.3, 3.3)  # torchvision's RandomErasing defaults

Space = dict[str, tuple[list[float] | None, bool]]  # op -> (magnitude of each bin, or None; signed)


def _bins(low: float, high: float) -> list[float]:
    return torch.linspace(low, high, NUM_BINS).tolist()


def _posterize(levels: int) -> list[float]:
    return (8 - (torch.arange(NUM_BINS) / ((NUM_BINS - 1) / levels))).round().int().float().tolist()


def trivial_space(height: int, width: int) -> Space:
    """TrivialAugmentWide's ops and magnitudes (Mueller & Hutter 2021, the "wide" ranges)."""
    return {"Identity": (None, False), "ShearX": (_bins(0, 0.99), True), "ShearY": (_bins(0, 0.99), True),
            "TranslateX": (_bins(0, 32), True), "TranslateY": (_bins(0, 32), True), "Rotate": (_bins(0, 135), True),
            "Brightness": (_bins(0, 0.99), True), "Color": (_bins(0, 0.99), True),
            "Contrast": (_bins(0, 0.99), True), "Sharpness": (_bins(0, 0.99), True),
            "Posterize": (_posterize(6), False), "Solarize": (_bins(1, 0), False),
            "AutoContrast": (None, False), "Equalize": (None, False)}


def rand_space(height: int, width: int) -> Space:
    """RandAugment's ops and magnitudes (Cubuk et al. 2020, as torchvision)."""
    return {"Identity": (None, False), "ShearX": (_bins(0, 0.3), True), "ShearY": (_bins(0, 0.3), True),
            "TranslateX": (_bins(0, 150 / 331 * width), True), "TranslateY": (_bins(0, 150 / 331 * height), True),
            "Rotate": (_bins(0, 30), True), "Brightness": (_bins(0, 0.9), True), "Color": (_bins(0, 0.9), True),
            "Contrast": (_bins(0, 0.9), True), "Sharpness": (_bins(0, 0.9), True),
            "Posterize": (_posterize(4), False), "Solarize": (_bins(1, 0), False),
            "AutoContrast": (None, False), "Equalize": (None, False)}


def apply_op(img: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """One op on a (3, H, W) uint8 image, as torchvision's _AutoAugmentBase applies it (nearest, fill 0)."""
    if name in ("ShearX", "ShearY"):
        shear = math.degrees(math.atan(magnitude))
        return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, center=[0, 0],
                        shear=[shear, 0.0] if name == "ShearX" else [0.0, shear])
    if name in ("TranslateX", "TranslateY"):
        move = [int(magnitude), 0] if name == "TranslateX" else [0, int(magnitude)]
        return F.affine(img, angle=0.0, translate=move, scale=1.0, shear=[0.0, 0.0])
    adjust: dict[str, Callable[[], torch.Tensor]] = {
        "Identity": lambda: img,
        "Rotate": lambda: F.rotate(img, angle=magnitude),
        "Brightness": lambda: F.adjust_brightness(img, 1.0 + magnitude),
        "Color": lambda: F.adjust_saturation(img, 1.0 + magnitude),
        "Contrast": lambda: F.adjust_contrast(img, 1.0 + magnitude),
        "Sharpness": lambda: F.adjust_sharpness(img, 1.0 + magnitude),
        "Posterize": lambda: F.posterize(img, int(magnitude)),
        "Solarize": lambda: F.solarize(img, 255.0 * magnitude),
        "AutoContrast": lambda: F.autocontrast(img),
        "Equalize": lambda: F.equalize(img),
    }
    return adjust[name]()


class Draw(NamedTuple):
    """One sample's augmentation, drawn from its rng and applied apart from the drawing: on the CPU in the
    worker, or for data.decode=gpu on the device (the worker draws, the rank's decoder applies)."""

    ops: tuple[tuple[str, float], ...]  # (op name, signed magnitude), applied in order
    erase: tuple[int, int, int, int] | None  # (top, left, h, w) filled with the mean colour

    @property
    def changes(self) -> bool:
        """Whether applying it changes anything (no op drawn and no box to erase: nothing to do)."""
        return bool(self.ops) or self.erase is not None

    def apply(self, img: torch.Tensor) -> torch.Tensor:
        """A (3, H, W) uint8 image on any device -> the augmented image (a new tensor, or `img` unchanged)."""
        for name, magnitude in self.ops:
            img = apply_op(img, name, magnitude)
        if self.erase is not None:
            top, left, h, w = self.erase
            img = img.clone()
            fill = torch.tensor(MEAN_RGB, dtype=torch.uint8).view(3, 1, 1)
            img[:, top:top + h, left:left + w] = fill.to(img.device, non_blocking=True)
        return img


class AutoAugment:
    """data.auto_augment: "trivialaugment" (one op, a random bin) or "randaugment" (num_ops ops at one bin)."""

    def __init__(self, kind: str, num_ops: int = 2, magnitude: int = 9) -> None:
        self.kind, self.num_ops, self.magnitude = kind, num_ops, magnitude
        self.space_of = trivial_space if kind == "trivialaugment" else rand_space
        self.spaces: dict[tuple[int, int], Space] = {}

    def draw(self, rng: random.Random, height: int, width: int) -> tuple[tuple[str, float], ...]:
        space = self.spaces.get((height, width)) or self.spaces.setdefault((height, width),
                                                                          self.space_of(height, width))
        names = list(space)
        ops = []
        for _ in range(1 if self.kind == "trivialaugment" else self.num_ops):
            name = names[rng.randrange(len(names))]
            bins, signed = space[name]
            magnitude = 0.0
            if bins is not None:
                magnitude = bins[rng.randrange(NUM_BINS) if self.kind == "trivialaugment" else self.magnitude]
                if signed and rng.random() <= 0.5:
                    magnitude = -magnitude
            ops.append((name, magnitude))
        return tuple(ops)

    def __call__(self, img: torch.Tensor, rng: random.Random) -> torch.Tensor:
        return Draw(self.draw(rng, img.shape[-2], img.shape[-1]), None).apply(img)


def erase_box(rng: random.Random, height: int, width: int) -> tuple[int, int, int, int] | None:
    """torchvision's RandomErasing.get_params (scale 0.02-0.33, ratio 0.3-3.3) drawing from `rng`:
    (top, left, h, w), or None when ten tries find no box that fits."""
    area, log_ratio = height * width, (math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]))
    for _ in range(10):
        erase_area = area * rng.uniform(*ERASE_SCALE)
        aspect = math.exp(rng.uniform(*log_ratio))
        h, w = int(round(math.sqrt(erase_area * aspect))), int(round(math.sqrt(erase_area / aspect)))
        if h < height and w < width:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return None


class Augment:
    """What runs on each training crop after crop and flip. `draw(rng, h, w)` continues the sample's rng
    after the crop's and the flip's draws; `augment(slot, rng)` draws and applies to an (H, W, 3) slot."""

    def __init__(self, auto: AutoAugment | None, erasing: float) -> None:
        self.auto, self.erasing = auto, erasing

    def draw(self, rng: random.Random, height: int, width: int) -> Draw:
        ops = self.auto.draw(rng, height, width) if self.auto is not None else ()
        erase = erase_box(rng, height, width) if self.erasing and rng.random() < self.erasing else None
        return Draw(ops, erase)

    def __call__(self, slot: torch.Tensor, rng: random.Random) -> None:
        draw = self.draw(rng, slot.shape[0], slot.shape[1])
        if draw.changes:
            slot.copy_(draw.apply(slot.permute(2, 0, 1)).permute(1, 2, 0))


def from_config(cfg: DataConfig) -> Augment | None:
    """data.auto_augment and data.random_erasing; None when both are off (the preset then does nothing more)."""
    auto = None if cfg.auto_augment == "none" else AutoAugment(cfg.auto_augment, cfg.randaugment_ops,
                                                               cfg.randaugment_magnitude)
    return Augment(auto, cfg.random_erasing) if auto is not None or cfg.random_erasing > 0 else None
