"""`data.decode: gpu`: DataLoader workers only read shards and draw each sample's `Plan`; the rank's process
decodes each batch with nvJPEG in one call (torchcodec's decode_jpeg; torchvision's only where torchcodec
is missing) and renders it (gpu_render.py), on a stream of its own in a background thread, two batches
ahead (gpu_prefetch.py). The plans, and TrivialAugment / RandAugment / random erasing draws, come from the
same per-sample RNG as on the CPU path, so both paths augment alike and resume alike; the device applies
the draws to the rendered uint8 crops. Without CUDA it stops with an error naming data.decode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import simplejpeg
import torch

from trainer.data.augment import Draw
from trainer.data.gpu_prefetch import CudaStreams, Prefetcher, Streams
from trainer.data.gpu_render import geometry, render_batch
from trainer.data.transforms import Plan, shared_empty
from trainer.errors import ConfigError, DataError, first_line
from trainer.step import IGNORE

log = logging.getLogger(__name__)

_torchcodec_decode: Callable[..., Any] | None
try:  # a Linux dependency (pyproject.toml); its decode_jpeg syncs the current stream before nvJPEG writes
    from torchcodec.decoders import decode_jpeg as _torchcodec_decode
except (ImportError, OSError, RuntimeError):  # not installed, or its native libraries do not load here
    _torchcodec_decode = None

# (bytes as 1-D uint8 CPU tensors, device) -> one (3, H, W) uint8 image each; raises on undecodable bytes
DecodeFn = Callable[[list[torch.Tensor], torch.device], list[torch.Tensor]]


class JpegBatch(NamedTuple):
    """A packed batch, as it crosses from a worker: few large tensors rather than B small ones (each tensor
    is one shared-memory file), and each sample's key and shard for the log line of one nvJPEG cannot read."""

    data: torch.Tensor  # uint8: the JPEGs, concatenated
    offsets: torch.Tensor  # int64 [B + 1]
    rows: torch.Tensor  # int64 [B, 12]: gpu_render.geometry
    labels: torch.Tensor  # int64 [B]; IGNORE where the worker could not read the header
    keys: list[str]
    shards: list[str]
    draws: list[Draw | None]  # each sample's augmentation (data.auto_augment, data.random_erasing), or None


def pack(samples: Iterable[tuple[bytes, Plan, int, int]], labels: list[int], keys: Sequence[str],
         shards: Sequence[str], margin: float, draws: Sequence[Draw | None] = ()) -> JpegBatch:
    """Worker side: (jpeg bytes, plan, height, width) per sample -> one JpegBatch. `margin` is the preset's
    data.reduced_decode_margin: the GPU renders the same 1/k crop boxes as the CPU path."""
    blobs, rows = [], []
    for data, plan, height, width in samples:
        blobs.append(data)
        rows.append(geometry(plan, height, width, margin))
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    packed = shared_empty((int(offsets[-1]),))
    view = packed.numpy()
    for blob, start, end in zip(blobs, offsets[:-1], offsets[1:]):
        view[start:end] = np.frombuffer(blob, dtype=np.uint8)
    return JpegBatch(packed, torch.from_numpy(offsets), torch.tensor(rows, dtype=torch.int64),
                     torch.tensor(labels, dtype=torch.int64), list(keys), list(shards),
                     list(draws) or [None] * len(rows))


def check_device(device: torch.device) -> None:
    """Stop early, with the fix, where data.decode=gpu cannot work."""
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ConfigError(
            f"data.decode=gpu decodes JPEGs with nvJPEG on a CUDA device, but this run's device is {device}"
            f"{'' if torch.cuda.is_available() else ' and no CUDA device is available'}: "
            "set data.decode=cpu, or run on a machine with an NVIDIA GPU (device=cuda or device=auto)"
        )


def torchcodec_decode(blobs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    assert _torchcodec_decode is not None
    return list(_torchcodec_decode(blobs, mode="RGB", device=device))


def torchvision_decode(blobs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg  # only the fallback needs torchvision.io

    return list(decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device))


def default_decode() -> DecodeFn:
    return torchcodec_decode if _torchcodec_decode is not None else torchvision_decode


class GpuDecoder:
    """JpegBatch -> (normalised float32 batch on the device, labels on the host), in one decode call
    and one batched render; runs on whatever stream is current (the prefetcher's). A batch with
    augmentation draws is rendered to uint8 instead (the CPU path's pixels), each draw applied on the
    device, and left to the loop's Normalize."""

    def __init__(self, size: int, device: torch.device, channels_last: bool = True,
                 decode: DecodeFn | None = None) -> None:
        if decode is None:  # the real thing: CUDA only. Tests inject a decoder and run on the CPU
            check_device(device)
        self.size, self.device, self.channels_last = size, device, channels_last
        self.decode = decode or default_decode()
        tiny = simplejpeg.encode_jpeg(np.zeros((8, 8, 3), np.uint8))
        probe = pack([(tiny, Plan(0, 0, 8, 8, 8, 8, 0, 0, False), 8, 8)], [0], ["probe"], ["-"], 0)
        try:  # a build without nvJPEG fails here rather than at the first batch
            self(probe)
        except RuntimeError as e:
            raise ConfigError(f"data.decode=gpu: cannot decode JPEGs on {device} ({e}); set data.decode=cpu, "
                              "or install torchcodec (or a torchvision) built with nvJPEG") from e

    def __call__(self, batch: JpegBatch) -> tuple[torch.Tensor, torch.Tensor]:
        bounds = batch.offsets.tolist()  # host tensors: no device sync
        blobs = [batch.data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        rows, labels = batch.rows, batch.labels
        try:
            images = self.decode(blobs, self.device)
        except RuntimeError:  # one undecodable sample fails the whole call: find it, skip it as the CPU path does
            images, rows, labels = _decode_each(self.decode, blobs, batch, self.device)
        if not any(batch.draws):
            return render_batch(images, rows, self.size, channels_last=self.channels_last), labels
        pixels = render_batch(images, rows, self.size, channels_last=self.channels_last, normalize=False)
        crops = pixels.round_().clamp_(0, 255).to(torch.uint8)
        for i, draw in enumerate(batch.draws):  # per image: torchvision's ops take one magnitude each
            if draw is not None and draw.changes:
                crops[i] = draw.apply(crops[i])
        return crops, labels


def _decode_each(decode: DecodeFn, blobs: list[torch.Tensor], batch: JpegBatch, device: torch.device
                 ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Decode one image at a time. A sample nvJPEG cannot decode (the workers read only its header) is
    logged by shard and key and left out of the loss (label IGNORE), with another image and its row in its slot;
    the loop counts it against data.max_bad_samples (loader.count_skipped)."""
    images: list[torch.Tensor | None] = []
    labels = batch.labels.clone()
    for i, blob in enumerate(blobs):
        try:
            images.append(decode([blob], device)[0])
        except RuntimeError as e:
            log.warning("skipping sample %s of shard %s: it cannot be decoded on %s (%s)", batch.keys[i],
                        batch.shards[i], device, first_line(e))
            images.append(None)
            labels[i] = IGNORE
    good = next((i for i, image in enumerate(images) if image is not None), None)
    if good is None:
        shards = ", ".join(sorted(set(batch.shards)))
        raise DataError(f"no sample of a batch from shards {shards} can be decoded on {device}; shards must hold "
                        "JPEGs (data_prep converts other formats); data.decode=cpu reads others")
    rows = batch.rows.clone()
    for i, image in enumerate(images):
        if image is None:
            rows[i] = batch.rows[good]
    return [image if image is not None else images[good] for image in images], rows, labels  # type: ignore[misc]


class GpuBatches:
    """A DataLoader of JpegBatches, iterated as (normalised float32 images on the device, int64 labels on the
    host). Each batch is decoded and rendered in a background thread on the loader's own stream, at most
    `depth` batches ahead (see gpu_prefetch); waiting for one counts as data wait in the loop."""

    def __init__(self, loader: Iterable[JpegBatch], decoder: Callable[[JpegBatch], tuple[torch.Tensor, ...]],
                 streams: Streams | None = None, depth: int = 2) -> None:
        self.loader, self.decoder, self.depth = loader, decoder, depth
        device = getattr(decoder, "device", torch.device("cpu"))
        self.streams = streams or (CudaStreams(device) if device.type == "cuda" else Streams())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(Prefetcher(self.loader, self.decoder, self.streams, self.depth))  # type: ignore[arg-type]
