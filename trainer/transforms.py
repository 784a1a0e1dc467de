"""Train and eval presets: JPEG bytes -> uint8 CHW tensors; normalisation happens later, on the device.

A preset turns an image's size into a `Plan` (crop, resize, centre crop, flip) and renders it on a
libjpeg-turbo decode, reduced in the DCT when the crop allows; trainer/gpu_decode.py renders the same
plans on the GPU. Augmentation randomness comes from a `random.Random` the caller derives from (seed,
epoch, key), so a sample's crop does not depend on which samples were decoded before it.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import get_worker_info

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


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from the JPEG header alone (any other format: PIL reads its header)."""
    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        return h, w
    except ValueError:
        w, h = Image.open(io.BytesIO(data)).size
        return h, w


def decode(data: bytes, height: int, width: int, reduction: int = 1) -> np.ndarray:
    """HWC uint8 RGB, about `reduction` times smaller per side (exact sizes: read the array's shape)."""
    try:
        # strict: a truncated JPEG raises instead of decoding with its missing rows filled grey; PIL
        # below still reads files with mere warnings (extraneous bytes), and refuses truncated ones too
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True,
                                      min_height=-(-height // reduction), min_width=-(-width // reduction))
    except ValueError:  # not a JPEG libjpeg-turbo reads as RGB (e.g. CMYK, PNG): PIL, full size
        img = Image.open(io.BytesIO(data))
        return np.array(img if img.mode == "RGB" else img.convert("RGB"))  # a writable copy, as torch wants


def render(image: torch.Tensor, plan: Plan, size: int, height: int, width: int) -> torch.Tensor:
    """Apply `plan` to a (1, C, H', W') image that was decoded from (height, width) pixels at any scale.

    Bilinear with antialias, as PIL and torchvision resize: uint8 in and out (torch's uint8 kernel on
    the CPU is ~3x faster than PIL; on CUDA it computes in float and rounds)."""
    sy, sx = image.shape[-2] / height, image.shape[-1] / width
    top, bottom = round(plan.top * sy), round((plan.top + plan.height) * sy)
    left, right = round(plan.left * sx), round((plan.left + plan.width) * sx)
    x = image[..., top:max(bottom, top + 1), left:max(right, left + 1)]
    if x.shape[-2:] != (plan.out_h, plan.out_w):
        floats = x.dtype == torch.uint8 and x.device.type != "cpu"
        # a dense channels-last crop takes the CPU's vectorised uint8 path and comes out channels-last,
        # so collate copies it straight into the batch (measured 2x faster than resizing the strided slice)
        x = x.float() if floats else x.contiguous(memory_format=torch.channels_last)
        x = F.interpolate(x, (plan.out_h, plan.out_w), mode="bilinear", antialias=True, align_corners=False)
        if floats:
            x = x.round_().clamp_(0, 255).to(torch.uint8)
    x = x[..., plan.ctop:plan.ctop + size, plan.cleft:plan.cleft + size]
    return x.flip(-1) if plan.flip else x


class TrainPreset:
    """RandomResizedCrop(size) and a horizontal flip, on JPEG bytes; returns a (3, size, size) uint8 tensor."""

    def __init__(self, size: int, margin: float = 2.0) -> None:
        self.size, self.margin = size, margin

    def plan(self, data: bytes, rng: random.Random) -> tuple[Plan, int, int]:
        height, width = jpeg_size(data)
        return train_plan(rng, height, width, self.size), height, width

    def __call__(self, data: bytes, rng: random.Random) -> torch.Tensor:
        plan, height, width = self.plan(data, rng)
        return _render_cpu(data, plan, self.size, height, width, self.margin)


class EvalPreset:
    """Resize the short side to `resize`, then centre-crop `size`, as torchvision's eval preset."""

    def __init__(self, size: int, resize: int, margin: float = 2.0) -> None:
        self.size, self.resize, self.margin = size, resize, margin

    def plan(self, data: bytes, rng: random.Random | None = None) -> tuple[Plan, int, int]:
        height, width = jpeg_size(data)
        return eval_plan(height, width, self.size, self.resize), height, width

    def __call__(self, data: bytes, rng: random.Random | None = None) -> torch.Tensor:
        plan, height, width = self.plan(data)
        return _render_cpu(data, plan, self.size, height, width, self.margin)


def _render_cpu(data: bytes, plan: Plan, size: int, height: int, width: int, margin: float) -> torch.Tensor:
    pixels = decode(data, height, width, dct_reduction(plan, margin))
    image = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)  # channels-last NCHW view, no copy
    return render(image, plan, size, height, width)[0]


def collate(images: Iterable[torch.Tensor | None], n: int) -> torch.Tensor | None:
    """Copy `n` (3, H, W) uint8 images into an NCHW uint8 batch stored channels-last; None if all are None.

    `images` may be a generator: one image is alive at a time, so a worker holds one batch, not two.
    A None (a sample that could not be decoded) gets a copy of another image of the batch. In a
    DataLoader worker the batch is allocated in shared memory (as default_collate does), so handing it
    to the main process copies nothing."""
    batch, missing, stand_in = None, [], 0
    for i, image in enumerate(images):
        if image is None:
            missing.append(i)
            continue
        if batch is None:
            c, h, w = image.shape
            batch = shared_empty((n, h, w, c)).permute(0, 3, 1, 2)
            stand_in = i
        batch[i].copy_(image)
    for i in missing if batch is not None else ():
        batch[i].copy_(batch[stand_in])
    return batch


def shared_empty(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor; in a DataLoader worker, in shared memory (sent without a copy)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(math.prod(shape))  # default_collate's trick
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


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
