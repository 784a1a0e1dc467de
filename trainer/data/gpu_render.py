"""data.decode=gpu: a batch of full-size decoded images -> the normalised float batch, in a fixed number of
kernels per chunk of images (not per image): crop, DCT-reduction stand-in, antialiased resize, centre crop
and flip are all linear maps of rows and columns, so each image's are folded into one row matrix and one
column matrix, and a chunk of images is rendered by two batched matmuls and one multiply-add.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainer.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Plan, crop_box, dct_reduction

# A packed row per sample (worker side, `geometry`): the crop box in the 1/k grid the CPU path would
# decode to, k, the plan's resize and centre crop, the flip, and the image's full size.
FIELDS = ("top", "left", "h", "w", "k", "out_h", "out_w", "ctop", "cleft", "flip", "height", "width")
# Padded float pixels per chunk (x4 bytes): bounds memory when a batch mixes small and huge images.
CHUNK_ELEMENTS = 1 << 26


def geometry(plan: Plan, height: int, width: int, margin: float) -> tuple[int, ...]:
    """A sample's packed row: the CPU path's own decisions (dct_reduction, crop_box), made in the worker
    with the same Python rounding, so that the GPU crops exactly the pixels the CPU path would."""
    k = dct_reduction(plan, margin)
    rows, cols = -(-height // k), -(-width // k)
    top, left, h, w = crop_box(plan, rows, cols, height, width)
    return (top, left, h, w, k, plan.out_h, plan.out_w, plan.ctop, plan.cleft, int(plan.flip), height, width)


def axis_weights(full: torch.Tensor, k: torch.Tensor, start: torch.Tensor, n_in: torch.Tensor, n_out: torch.Tensor,
                 offset: torch.Tensor, flip: torch.Tensor, size: int, length: int) -> torch.Tensor:
    """(N, size, length) float32: output pixel i of image n as a weighted sum of its full-size rows (or columns).

    Composes (right to left) a k x k box average standing in for libjpeg's 1/k DCT-scaled decode (edge
    blocks replicate the last pixel, as the encoder padded them), the crop [start, start + n_in) of that
    grid, torch's antialiased bilinear resize n_in -> n_out (the formula of aten's _upsample_bilinear2d_aa,
    which the CPU path runs), the window [offset, offset + size) and a mirror. All arguments are (N,) int64."""
    dev = full.device
    col = lambda t: t.view(-1, 1, 1).to(torch.float32)  # noqa: E731 - (N,) -> (N, 1, 1) for broadcasting
    i = torch.arange(size, device=dev).view(1, -1, 1)
    i = offset.view(-1, 1, 1) + torch.where(flip.view(-1, 1, 1).bool(), size - 1 - i, i)
    scale = col(n_in) / col(n_out)
    center = scale * (i + 0.5)
    support = torch.where(scale >= 1, scale, torch.ones_like(scale))
    invscale = 1 / support
    lo = torch.clamp((center - support + 0.5).trunc(), min=0)
    hi = torch.minimum((center + support + 0.5).trunc(), col(n_in))
    j = torch.arange(int(n_in.max()), device=dev, dtype=torch.float32).view(1, 1, -1)
    w = torch.clamp(1 - ((j - center + 0.5) * invscale).abs(), min=0) * ((j >= lo) & (j < hi))
    w = w / w.sum(-1, keepdim=True)  # (N, size, max n_in)
    y = torch.arange(length, device=dev).view(1, -1)
    r = torch.div(y, k.view(-1, 1), rounding_mode="floor") - start.view(-1, 1)  # index in the crop
    inside = (r >= 0) & (r < n_in.view(-1, 1)) & (y < full.view(-1, 1))
    blocks = torch.div(full + k - 1, k, rounding_mode="floor")
    pool = (1 + (y == full.view(-1, 1) - 1) * (k * blocks - full).view(-1, 1)) / k.view(-1, 1)
    taken = w.gather(2, r.clamp(0, w.shape[-1] - 1).unsqueeze(1).expand(-1, size, -1))
    return taken * (inside * pool).unsqueeze(1)


def render_batch(images: Sequence[torch.Tensor], rows: torch.Tensor, size: int, *, channels_last: bool = True,
                 chunk_elements: int = CHUNK_ELEMENTS, normalize: bool = True) -> torch.Tensor:
    """Full-size (3, H, W) uint8 images (on one device) and their `geometry` rows (N, 12) -> the normalised
    float32 batch (N, 3, size, size) on that device, (x / 255 - mean) / std as Normalize computes it, never
    rounded to uint8 (with normalize=False: the float pixels, 0-255). Runs on the current stream (the
    loader's decode stream)."""
    dev = images[0].device
    rows = rows.to(dev)
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32, device=dev,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    scale, bias = 1 / (255 * std), -torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1) / std
    for chunk in _chunks([(im.shape[-2], im.shape[-1]) for im in images], chunk_elements):
        h_max, w_max = (max(images[i].shape[d] for i in chunk) for d in (-2, -1))
        padded = torch.zeros((len(chunk), 3, h_max, w_max), dtype=torch.uint8, device=dev)
        for slot, i in enumerate(chunk):  # one copy per image: the only per-image kernel
            padded[slot, :, :images[i].shape[-2], :images[i].shape[-1]] = images[i]
        r = rows[torch.tensor(chunk, device=dev)].unbind(1)
        top, left, h, w, k, out_h, out_w, ctop, cleft, flip, height, width = r
        wy = axis_weights(height, k, top, h, out_h, ctop, torch.zeros_like(flip), size, h_max)
        wx = axis_weights(width, k, left, w, out_w, cleft, flip, size, w_max)
        x = torch.matmul(wy.unsqueeze(1), padded.float())  # (n, 3, size, w_max)
        x = torch.matmul(x, wx.transpose(1, 2).unsqueeze(1))  # (n, 3, size, size)
        out[torch.tensor(chunk, device=dev)] = x.mul_(scale).add_(bias) if normalize else x
    return out


def _chunks(shapes: list[tuple[int, int]], budget: int) -> list[list[int]]:
    """Image indices grouped by size (similar sizes together, so little padding), each group's padded
    pixels within `budget` (a single image may exceed it alone)."""
    order = sorted(range(len(shapes)), key=lambda i: shapes[i])
    groups: list[list[int]] = []
    h_max = w_max = 0
    for i in order:
        h, w = shapes[i]
        if groups and (len(groups[-1]) + 1) * 3 * max(h, h_max) * max(w, w_max) <= budget:
            groups[-1].append(i)
            h_max, w_max = max(h, h_max), max(w, w_max)
        else:
            groups.append([i])
            h_max, w_max = h, w
    return groups
