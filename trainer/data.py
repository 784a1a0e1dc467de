"""The WebDataset input pipeline: `_info.json` -> per-epoch shard plan -> rank/worker split ->
raw-byte shuffle buffer -> decode + augment (transforms.py; data.decode=gpu: gpu_decode.py) -> uint8 batches.

Every rank takes exactly `steps_per_epoch` training batches per epoch (a reader that runs out of
shards starts over on them). Batch `s` of an epoch always comes from logical worker `s % workers`
and holds the same samples, so a loader can start at any step: it skips the samples before it as
raw bytes, without decoding them. Validation reads every sample exactly once across all ranks.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from trainer import gpu_decode, storage
from trainer.config import DataConfig
from trainer.seeding import derive_seed
from trainer.transforms import EvalPreset, TrainPreset, collate


class DataError(RuntimeError):
    """The dataset is missing or does not match what the run asks of it."""


@dataclass(frozen=True)
class Split:
    urls: tuple[str, ...]
    lengths: tuple[int, ...]

    @property
    def num_samples(self) -> int:
        return sum(self.lengths)


@dataclass(frozen=True)
class Manifest:
    train: Split
    val: Split | None
    class_names: tuple[str, ...]


def load_manifest(root: str) -> Manifest:
    """Read `<root>/_info.json` (timm's schema plus our class list)."""
    path = storage.join(root, "_info.json")
    if storage.is_local(root) and not os.path.isfile(path):
        raise DataError(
            f"no prepared dataset at data.root={root!r}: {path} does not exist.\n"
            "Prepare ImageNet once with\n"
            "  python -m data_prep imagenet --train ILSVRC2012_img_train.tar --val ILSVRC2012_img_val.tar"
            f" --devkit ILSVRC2012_devkit_t12.tar.gz --out {root}\n"
            f"or any image-folder dataset with `python -m data_prep folder --train DIR --val DIR --out {root}`,"
            " then pass data.root=<that folder>."
        )
    try:
        with wds.gopen(path, "rb") as f:
            info = json.load(f)
    except (OSError, ValueError, ImportError) as e:  # failed command, no object, no handler or backend
        raise DataError(f"cannot read the dataset manifest {path} (data.root={root!r} is "
                        f"{storage.describe(root)}): {e}") from e

    def split(name: str) -> Split | None:
        s = info["splits"].get(name)
        if not s:
            return None
        return Split(tuple(storage.join(root, n) for n in s["filenames"]), tuple(int(n) for n in s["shard_lengths"]))

    train = split("train")
    if train is None or train.num_samples == 0:
        raise DataError(f"{path} has no training samples (splits.train is missing or empty)")
    classes = info.get("classes") or []
    names = tuple(c.get("name") or c["wnid"] for c in sorted(classes, key=lambda c: c["index"]))
    return Manifest(train, split("val"), names)


def steps_per_epoch(split: Split, global_batch: int) -> int:
    steps = split.num_samples // global_batch
    if steps == 0:
        raise DataError(
            f"train.batch_size={global_batch} is larger than the training set ({split.num_samples} samples)"
        )
    return steps


def _assign(n_shards: int, slot: int, n_slots: int, order: list[int]) -> tuple[list[int], int]:
    """Shards for one reader slot, and the sample stride it keeps (>1 only with fewer shards than slots)."""
    if n_shards >= n_slots:
        return order[slot::n_slots], 1
    return order, n_slots  # tiny datasets: every slot reads all shards, keeps every n_slots-th sample


def _read(urls: list[str]) -> Iterator[tuple[str, bytes, int]]:
    samples = wds.tarfile_to_samples(handler=wds.reraise_exception)(iter([{"url": u} for u in urls]))
    for s in samples:
        yield s["__key__"], s["jpg"], int(s["cls"])


def _shuffled(items: Iterator, size: int, rng: random.Random) -> Iterator:
    """A shuffle buffer of raw samples: cheap to fill, and skipping from it decodes nothing."""
    buf: list = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        i = rng.randrange(size)
        buf[i], item = item, buf[i]
        yield item
    rng.shuffle(buf)
    yield from buf


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


class TrainStream(IterableDataset):
    """One epoch of training batches for one rank, from `start_step` to `steps`."""

    def __init__(self, split: Split, cfg: DataConfig, *, seed: int, epoch: int, start_step: int,
                 steps: int, local_batch: int, rank: int, world_size: int) -> None:
        self.split, self.cfg, self.seed, self.epoch = split, cfg, seed, epoch
        self.start_step, self.steps, self.batch = start_step, steps, local_batch
        self.rank, self.world_size = rank, world_size
        self.preset = TrainPreset(cfg.image_size, cfg.reduced_decode_margin)

    def _raw(self, slot: int, n_slots: int) -> Iterator[tuple[str, bytes, int, int]]:
        order = list(range(len(self.split.urls)))
        random.Random(derive_seed(self.seed, "shards", self.epoch)).shuffle(order)
        shards, stride = _assign(len(order), slot, n_slots, order)
        for cycle in itertools.count():  # a reader that runs out starts over, reshuffled
            random.Random(derive_seed(self.seed, "cycle", self.epoch, slot, cycle)).shuffle(shards)
            urls = [self.split.urls[i] for i in shards]
            for i, (key, data, label) in enumerate(_read(urls)):
                if i % stride == slot % stride:
                    yield key, data, label, cycle

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        w, n_workers = _worker()
        logical = (w + self.start_step) % n_workers  # the DataLoader hands batch j to worker j % n
        slot, n_slots = self.rank * n_workers + logical, self.world_size * n_workers
        skip = len(range(logical, self.start_step, n_workers))
        todo = len(range(self.start_step + w, self.steps, n_workers))
        rng = random.Random(derive_seed(self.seed, "buffer", self.epoch, slot))
        stream = _shuffled(self._raw(slot, n_slots), self.cfg.shuffle_buffer, rng)
        for _ in itertools.islice(stream, skip * self.batch):
            pass
        for _ in range(todo):
            items = list(itertools.islice(stream, self.batch))
            samples = ((data, random.Random(derive_seed(self.seed, "aug", self.epoch, key, cycle)))
                       for key, data, _, cycle in items)
            yield _batch(self.preset, samples, [label for _, _, label, _ in items], self.cfg.decode)


class EvalStream(IterableDataset):
    """Every validation sample exactly once across ranks and workers, in batches of `local_batch`."""

    def __init__(self, split: Split, cfg: DataConfig, *, local_batch: int, rank: int, world_size: int) -> None:
        self.split, self.batch, self.rank, self.world_size = split, local_batch, rank, world_size
        self.preset, self.decode = EvalPreset(cfg.image_size, cfg.eval_resize, cfg.reduced_decode_margin), cfg.decode

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        w, n_workers = _worker()
        slot, n_slots = self.rank * n_workers + w, self.world_size * n_workers
        shards, stride = _assign(len(self.split.urls), slot, n_slots, list(range(len(self.split.urls))))
        mine = (s for i, s in enumerate(_read([self.split.urls[i] for i in shards])) if i % stride == slot % stride)
        while items := list(itertools.islice(mine, self.batch)):
            yield _batch(self.preset, ((data, None) for _, data, _ in items), [label for _, _, label in items],
                         self.decode)


def _batch(preset: TrainPreset | EvalPreset, samples: Iterator[tuple[bytes, random.Random | None]],
           labels: list[int], decode: str) -> tuple[torch.Tensor, ...]:
    """A uint8 image batch (decoded here), or for data.decode=gpu the JPEG bytes and plans to decode there."""
    if decode == "gpu":
        return gpu_decode.pack(((data, *preset.plan(data, rng)) for data, rng in samples), labels)
    return collate((preset(data, rng) for data, rng in samples), labels)


def _ignore_stop_signals(worker_id: int) -> None:
    # torchrun signals the whole process group; only the rank itself decides when to stop, and its
    # workers exit with it (a worker killed under the rank would crash the step instead).
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def check_decode(cfg: DataConfig, device: torch.device) -> None:
    """Raise a ConfigError naming data.decode when it asks for a GPU this run does not have."""
    if cfg.decode == "gpu":
        gpu_decode.check_device(device)


def _loader(stream: IterableDataset, cfg: DataConfig, device: torch.device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    decoder = gpu_decode.GpuDecoder(cfg.image_size, device) if cfg.decode == "gpu" else None  # checks CUDA
    workers = cfg.workers
    loader = DataLoader(
        stream,
        batch_size=None,  # the streams batch themselves, so skipping stays raw
        num_workers=workers,
        pin_memory=device.type == "cuda",  # a pinned batch copies to the GPU asynchronously (Normalize)
        prefetch_factor=cfg.prefetch if workers else None,
        worker_init_fn=_ignore_stop_signals,
    )
    return gpu_decode.GpuBatches(loader, decoder) if decoder else loader


def train_loader(split: Split, cfg: DataConfig, device: torch.device,
                 **stream_args) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches (uint8 NCHW channels-last, int64 labels); on `device` with data.decode=gpu."""
    return _loader(TrainStream(split, cfg, **stream_args), cfg, device)


def eval_loader(split: Split, cfg: DataConfig, device: torch.device,
                **stream_args) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    return _loader(EvalStream(split, cfg, **stream_args), cfg, device)
