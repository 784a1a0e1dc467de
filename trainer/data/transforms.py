"""Train and eval presets: JPEG bytes -> uint8 images written into a batch; normalisation happens later,
on the device.

A preset turns an image's size into a `Plan` (crop, resize, centre crop, flip) and renders it: only the
pixels the plan uses are decoded (trainer/data/jpeg.py; at 1/2, 1/4 or 1/8 size when the crop allows), then
resized straight into the image's slot of the batch. trainer/data/gpu_decode.py renders the same plans on
the GPU. Augmentation randomness comes from a `random.Random` the caller derives from (seed, epoch, key),
so a sample's crop does not depend on which samples were decoded before it.
"""

from __future__ import annotations

import math
import random
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import get_worker_info

from trainer.config import DataConfig
from trainer.data import jpeg
from trainer.data.augment import Augment, Draw
from trainer.data.augment import from_config as augment_from_config

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
# libjpeg-turbo decodes at n/8 scale; only 1/2, 1/4 and 1/8 are faster than a full decode (measured:
# 7/8..5/8 are slower), see docs/benchmarks.md.
DCT_REDUCTIONS = (8, 4, 2)


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


class Plan(NamedTuple):
    """One image's geometry, in full-size pixels: crop (top, left, height, width), resize that to
    (out_h, out_w), take `size` x `size` at (ctop, cleft), mirror if `flip`."""

    top: int
    left: int
    height: int
    width: int
    out_h: int
    out_w: int
    ctop: int
    cleft: int
    flip: bool


def train_plan(rng: random.Random, height: int, width: int, size: int) -> Plan:
    """RandomResizedCrop(size, scale 0.08-1, ratio 3/4-4/3), then a horizontal flip with p=0.5."""
    top, left, h, w = crop_params(rng, height, width)
    return Plan(top, left, h, w, size, size, 0, 0, rng.random() < 0.5)


def eval_plan(height: int, width: int, size: int, resize: int) -> Plan:
    """torchvision's Resize(resize) (short side; the long side truncated) then CenterCrop(size)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(resize * long / short)
    out_h, out_w = (new_long, resize) if width <= height else (resize, new_long)
    return Plan(0, 0, height, width, out_h, out_w,
                int(round((out_h - size) / 2.0)), int(round((out_w - size) / 2.0)), False)


def dct_reduction(plan: Plan, margin: float) -> int:
    """The largest DCT reduction (1, 2, 4 or 8) after which the crop keeps >= `margin` pixels per output
    pixel in both dimensions (0: never reduce). margin >= 1 never upscales where a full decode would not;
    at 2 the final antialiased resize still does most of the filtering, so pixels stay close to a full
    decode's (libjpeg's DCT scaling alone is sharper than PIL's bilinear filter)."""
    room = min(plan.height / plan.out_h, plan.width / plan.out_w)
    return next((k for k in DCT_REDUCTIONS if margin and k * margin <= room), 1)


def crop_box(plan: Plan, rows: int, cols: int, height: int, width: int) -> tuple[int, int, int, int]:
    """The plan's crop in the pixels of a (rows, cols) decode of a (height, width) image: (top, left, h, w),
    at least one pixel, inside the image."""
    sy, sx = rows / height, cols / width
    top, left = min(round(plan.top * sy), rows - 1), min(round(plan.left * sx), cols - 1)
    bottom = min(max(round((plan.top + plan.height) * sy), top + 1), rows)
    right = min(max(round((plan.left + plan.width) * sx), left + 1), cols)
    return top, left, bottom - top, right - left


def render(image: torch.Tensor, plan: Plan, size: int, height: int, width: int) -> torch.Tensor:
    """Apply `plan` to a (1, C, H', W') image that was decoded from (height, width) pixels at any scale
    (the data.decode=gpu path; the CPU presets decode only the crop). Bilinear with antialias, as PIL and
    torchvision resize; on CUDA in float, rounded."""
    top, left, h, w = crop_box(plan, image.shape[-2], image.shape[-1], height, width)
    x = image[..., top:top + h, left:left + w]
    if x.shape[-2:] != (plan.out_h, plan.out_w):
        floats = x.dtype == torch.uint8 and x.device.type != "cpu"
        x = x.float() if floats else x.contiguous(memory_format=torch.channels_last)
        x = F.interpolate(x, (plan.out_h, plan.out_w), mode="bilinear", antialias=True, align_corners=False)
        if floats:
            x = x.round_().clamp_(0, 255).to(torch.uint8)
    x = x[..., plan.ctop:plan.ctop + size, plan.cleft:plan.cleft + size]
    return x.flip(-1) if plan.flip else x


def _region(h: int, w: int) -> torch.Tensor:
    # (1, h, w, 3): its NCHW view has a batch stride of h*w*3, which F.interpolate reads as channels-last and
    # answers with its vectorised uint8 kernel (a (3, h, w) view's unsqueeze(0) takes a path ~3x slower)
    return torch.empty((1, h, w, 3), dtype=torch.uint8)


def _resize(region: torch.Tensor, size: tuple[int, int] | None = None,
            scale: tuple[float, float] | None = None) -> torch.Tensor:
    """(1, h, w, 3) uint8 -> (H, W, 3) view, to `size` or by `scale`: bilinear with antialias, as PIL and
    torchvision."""
    if scale is not None:  # out/n x n can land just under the integer out (231.99999999999997): interpolate
        scale = (scale[0] * (1 + 1e-9), scale[1] * (1 + 1e-9))  # floors it, one row short; 1e-9 moves no pixel
    x = F.interpolate(region.permute(0, 3, 1, 2), size=size, scale_factor=scale, mode="bilinear", antialias=True,
                      align_corners=False, recompute_scale_factor=False if scale else None)
    return x[0].permute(1, 2, 0)


class TrainPreset:
    """RandomResizedCrop(size) and a horizontal flip, on JPEG bytes; then, with `augment`, TrivialAugment /
    RandAugment and random erasing on the uint8 crop (trainer/data/augment.py), drawing from the same rng."""

    def __init__(self, size: int, margin: float = 2.0, augment: Augment | None = None) -> None:
        self.size, self.margin, self.augment = size, margin, augment

    @classmethod
    def from_config(cls, cfg: DataConfig) -> TrainPreset:
        """data.image_size, data.reduced_decode_margin, data.auto_augment and data.random_erasing."""
        return cls(cfg.image_size, cfg.reduced_decode_margin, augment_from_config(cfg))

    def plan(self, data: bytes, rng: random.Random) -> tuple[Plan, int, int]:
        height, width = jpeg.jpeg_size(data)
        return train_plan(rng, height, width, self.size), height, width

    def draw(self, rng: random.Random | None) -> Draw | None:
        """data.decode=gpu: the augmentation's draws, after the plan's (as `render_into` makes them), for the
        device to apply; None without augmentation."""
        return self.augment.draw(rng, self.size, self.size) if self.augment is not None and rng else None

    def render_into(self, data: bytes, rng: random.Random, out: torch.Tensor) -> torch.Tensor:
        """Write the image into `out`, a contiguous (size, size, 3) uint8 tensor (a slot of the batch)."""
        plan, height, width = self.plan(data, rng)
        k = dct_reduction(plan, self.margin)
        rows, cols = jpeg.decoded_size(height, width, k)
        top, left, h, w = crop_box(plan, rows, cols, height, width)
        if (h, w) == out.shape[:2]:
            jpeg.decode_box(data, out, height, width, k, top, left, plan.flip)
        else:
            region = _region(h, w)
            jpeg.decode_box(data, region[0], height, width, k, top, left, False)
            resized = _resize(region, size=(self.size, self.size))
            out.copy_(resized.flip(1) if plan.flip else resized)  # torch's flip: 2x faster than the decoder's
        if self.augment is not None:  # its draws follow the crop's and the flip's: those stay as they were
            self.augment(out, rng)
        return out

    def __call__(self, data: bytes, rng: random.Random) -> torch.Tensor:
        """The image alone: (3, size, size) uint8."""
        return self.render_into(data, rng, torch.empty((self.size, self.size, 3), dtype=torch.uint8)).permute(2, 0, 1)


class EvalPreset:
    """Resize the short side to `resize`, then centre-crop `size`, as torchvision's eval preset."""

    def __init__(self, size: int, resize: int, margin: float = 2.0) -> None:
        self.size, self.resize, self.margin = size, resize, margin

    def plan(self, data: bytes, rng: random.Random | None = None) -> tuple[Plan, int, int]:
        height, width = jpeg.jpeg_size(data)
        return eval_plan(height, width, self.size, self.resize), height, width

    def draw(self, rng: random.Random | None) -> None:
        return None  # evaluation does not augment

    def render_into(self, data: bytes, rng: random.Random | None, out: torch.Tensor) -> torch.Tensor:
        """Write the image into `out`, a contiguous (size, size, 3) uint8 tensor (a slot of the batch).

        Only the rows and columns up to the centre crop's far edges (and the resize filter's reach) are
        decoded and resized; with no resize at all (short side already `resize`) only the crop is decoded."""
        plan, height, width = self.plan(data)
        k = dct_reduction(plan, self.margin)
        rows, cols = jpeg.decoded_size(height, width, k)
        if (rows, cols) == (plan.out_h, plan.out_w):
            jpeg.decode_box(data, out, height, width, k, plan.ctop, plan.cleft, False)
            return out
        scale = (plan.out_h / rows, plan.out_w / cols)
        need = (_reach(plan.ctop + self.size, scale[0], rows), _reach(plan.cleft + self.size, scale[1], cols))
        region = _region(*need)
        jpeg.decode_box(data, region[0], height, width, k, 0, 0, False)
        if need == (rows, cols):
            resized = _resize(region, size=(plan.out_h, plan.out_w))
        else:  # a window from the top left: the full image's scale keeps every pixel where it was
            resized = _resize(region, scale=scale)
        return out.copy_(resized[plan.ctop:plan.ctop + self.size, plan.cleft:plan.cleft + self.size])

    def __call__(self, data: bytes, rng: random.Random | None = None) -> torch.Tensor:
        """The image alone: (3, size, size) uint8."""
        return self.render_into(data, rng, torch.empty((self.size, self.size, 3), dtype=torch.uint8)).permute(2, 0, 1)


def _reach(n: int, scale: float, length: int) -> int:
    """How many input pixels an antialiased bilinear resize by `scale` reads for its first `n` outputs (its
    kernel spans 1 input pixel per side, or 1/scale when shrinking), plus one for rounding; at most `length`."""
    support = max(1 / scale, 1.0)
    return min(length, max(math.ceil(n / scale), int((n - 0.5) / scale + support + 0.5)) + 1)


def empty_batch(n: int, size: int) -> torch.Tensor:
    """(n, size, size, 3) uint8: each image's slot is contiguous; `.permute(0, 3, 1, 2)` is the NCHW batch,
    stored channels-last. In a DataLoader worker it lives in shared memory, so handing it to the main
    process copies nothing."""
    return shared_empty((n, size, size, 3))


def shared_empty(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; in a DataLoader worker, in shared memory (sent without a copy)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(math.prod(shape))  # default_collate's trick
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


class Normalize:
    """uint8 NCHW batch -> normalised float on the device, in the model's memory format.

    A float batch is already normalised (data.decode=gpu renders straight to it, gpu_render.py): it is
    only moved to the device and memory format, which is nothing when it is there already."""

    def __init__(self, device: torch.device, channels_last: bool) -> None:
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.is_floating_point():
            return images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        x = images.to(self.device, non_blocking=True).float()
        x = x.sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=self.memory_format)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """The uint8 pixels of a batch as the loader gives it (a normalised float batch mapped back), for
        pictures of what the model sees; the batch stays on its device."""
        if not images.is_floating_point():
            return images
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        return (images * std + mean).round_().clamp_(0, 255).to(torch.uint8)
