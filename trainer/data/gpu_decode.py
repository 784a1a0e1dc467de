"""`data.decode: gpu`: DataLoader workers only read shards and draw each sample's `Plan`; the rank's own
process decodes the batch with nvJPEG (torchvision.io.decode_jpeg on cuda) and crops, resizes and
flips on the GPU. The plans come from the same per-sample RNG as on the CPU path, so both paths
augment alike and resume alike. Without CUDA it stops with an error naming data.decode.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import numpy as np
import simplejpeg
import torch

from trainer.data.transforms import Plan, render, shared_empty
from trainer.errors import ConfigError, DataError, first_line
from trainer.step import IGNORE

log = logging.getLogger(__name__)

# A packed batch: (concatenated JPEG bytes, offsets [B+1], plans [B, 11] = Plan + (height, width), labels).
# Few large tensors rather than B small ones: each tensor crosses from a worker as one shared-memory file.
JpegBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def pack(samples: Iterable[tuple[bytes, Plan, int, int]], labels: list[int]) -> JpegBatch:
    """Worker side: (jpeg bytes, plan, height, width) per sample -> one JpegBatch."""
    blobs, rows = [], []
    for data, plan, height, width in samples:
        blobs.append(data)
        rows.append((*plan, height, width))
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    packed = shared_empty((int(offsets[-1]),))
    view = packed.numpy()
    for blob, start, end in zip(blobs, offsets[:-1], offsets[1:]):
        view[start:end] = np.frombuffer(blob, dtype=np.uint8)
    return (packed, torch.from_numpy(offsets), torch.tensor(rows, dtype=torch.int64),
            torch.tensor(labels, dtype=torch.int64))


def check_device(device: torch.device) -> None:
    """Stop early, with the fix, where data.decode=gpu cannot work."""
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ConfigError(
            f"data.decode=gpu decodes JPEGs with nvJPEG on a CUDA device, but this run's device is {device}"
            f"{'' if torch.cuda.is_available() else ' and no CUDA device is available'}: "
            "set data.decode=cpu, or run on a machine with an NVIDIA GPU (device=cuda or device=auto)"
        )


class GpuDecoder:
    """JpegBatch -> (uint8 NCHW batch on the device, stored channels-last; labels)."""

    def __init__(self, size: int, device: torch.device) -> None:
        check_device(device)
        self.size, self.device = size, device
        tiny = simplejpeg.encode_jpeg(np.zeros((8, 8, 3), np.uint8))
        probe = pack([(tiny, Plan(0, 0, 8, 8, 8, 8, 0, 0, False), 8, 8)], [0])
        try:  # a torchvision built without nvJPEG fails here rather than at the first batch
            decode_batch(probe, 8, device)
        except RuntimeError as e:
            raise ConfigError(f"data.decode=gpu: torchvision cannot decode JPEGs on {device} ({e}); "
                              "set data.decode=cpu or install a torchvision built with nvJPEG") from e

    def __call__(self, batch: JpegBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return decode_batch(batch, self.size, self.device)


def decode_batch(batch: JpegBatch, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a JpegBatch on `device` in one decode_jpeg call and render each sample's plan there.

    Per-image crops and resizes are small kernels (~6 per image); images of different sizes cannot
    share one. The same function runs on the CPU, which is how the tests check it."""
    from torchvision.io import ImageReadMode, decode_jpeg  # only this path needs torchvision.io

    data, offsets, rows, labels = batch
    bounds = offsets.tolist()
    blobs = [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    plans = rows.tolist()
    try:
        images = decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:  # one undecodable sample fails the whole call: find it, and skip it as the CPU path does
        images, plans, labels = _decode_each(blobs, plans, labels, device)
    out = torch.empty((len(blobs), 3, size, size), dtype=torch.uint8, device=device,
                      memory_format=torch.channels_last)
    for i, (image, row) in enumerate(zip(images, plans)):
        top, left, h, w, out_h, out_w, ctop, cleft, flip, height, width = row
        plan = Plan(top, left, h, w, out_h, out_w, ctop, cleft, bool(flip))
        out[i] = render(image.unsqueeze(0), plan, size, height, width)[0]
    return out, labels


def _decode_each(blobs: list[torch.Tensor], plans: list[list[int]], labels: torch.Tensor, device: torch.device
                 ) -> tuple[list[torch.Tensor], list[list[int]], torch.Tensor]:
    """Decode one image at a time. A sample nvJPEG cannot decode (the workers read only its header) is
    logged and left out of the loss (label IGNORE), with another image and its plan in its slot."""
    from torchvision.io import ImageReadMode, decode_jpeg


    images: list[torch.Tensor | None] = []
    labels = labels.clone()
    for i, blob in enumerate(blobs):
        try:
            images.append(decode_jpeg(blob, mode=ImageReadMode.RGB, device=device))
        except RuntimeError as e:
            log.warning("skipping sample %d of a batch: it cannot be decoded on %s (%s)", i, device, first_line(e))
            images.append(None)
            labels[i] = IGNORE
    good = next((i for i, image in enumerate(images) if image is not None), None)
    if good is None:
        raise DataError(f"no sample of a batch can be decoded on {device}; shards must hold JPEGs (data_prep "
                        "converts other formats); data.decode=cpu reads others")
    return ([image if image is not None else images[good] for image in images],  # type: ignore[misc]
            [plans[good] if image is None else plan for image, plan in zip(images, plans)], labels)


class GpuBatches:
    """A DataLoader of JpegBatches, iterated as device-ready uint8 batches. Decoding happens inside
    `next()`, so its host-side time counts as data wait in the loop's perf/data_wait_fraction."""

    def __init__(self, loader: Iterable[JpegBatch], decoder: GpuDecoder) -> None:
        self.loader, self.decoder = loader, decoder

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            yield self.decoder(batch)
