"""The WebDataset input pipeline: `_info.json` -> per-epoch shard plan -> rank/worker split ->
raw-byte shuffle buffer -> decode + augment (transforms.py; data.decode=gpu: gpu_decode.py) -> uint8 batches.

Every rank takes exactly `steps_per_epoch` training batches per epoch (a reader that runs out of
shards starts over on them). Batch `s` of an epoch always comes from logical worker `s % workers`
and holds the same samples, so a loader can start at any step: it skips the samples before it as
raw bytes, without decoding them. Validation reads every sample exactly once across all ranks.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import random
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from trainer.config import DataConfig
from trainer.data import gpu_decode, tarstream
from trainer.data.manifest import Split
from trainer.data.transforms import EvalPreset, TrainPreset, empty_batch
from trainer.errors import DataError, first_line
from trainer.resilience.lifecycle import die_with_parent  # workers die with their rank: an allowed edge
from trainer.seeding import derive_seed
from trainer.step import IGNORE  # a sample that could not be decoded

log = logging.getLogger(__name__)


class Sample(NamedTuple):
    key: str
    data: bytes | None  # None: the sample has no `jpg` entry
    label: int
    shard: str


def _assign(n_shards: int, slot: int, n_slots: int, order: list[int]) -> tuple[list[int], int]:
    """Shards for one reader slot, and the sample stride it keeps (>1 only with fewer shards than slots)."""
    if n_shards >= n_slots:
        return order[slot::n_slots], 1
    return order, n_slots  # tiny datasets: every slot reads all shards, keeps every n_slots-th sample


def _read(split: Split, shards: list[int], num_classes: int | None) -> Iterator[Sample]:
    """The samples of `shards` in order, every one checked: a readable shard, a JPEG, a label in range,
    and as many samples as the manifest says (more would be silently dropped, fewer repeated)."""
    for i in shards:
        url, count = split.urls[i], 0
        try:
            stream = wds.gopen(url, "rb")  # webdataset opens every data.root (files, pipe: commands, URLs)
            try:
                for key, parts in tarstream.samples(stream):  # a lighter reader than webdataset's (its docstring)
                    count += 1
                    yield Sample(key, parts.get("jpg"), _label(key, parts, url, num_classes), url)
            finally:
                with contextlib.suppress(Exception):  # a pipe: command stopped early exits non-zero; nothing lost
                    stream.close()
        except DataError:
            raise
        except Exception as e:  # missing file, failed pipe: command, damaged tar
            raise DataError(f"cannot read shard {url} ({type(e).__name__}: {first_line(e)}); check that it exists "
                            "and run `python -m data_prep verify` on data.root") from e
        if count != split.lengths[i]:
            raise DataError(f"shard {url} holds {count} samples but _info.json says {split.lengths[i]}; the "
                            "manifest does not describe these shards: run `python -m data_prep verify` on data.root")


def _label(key: str, sample: dict, url: str, num_classes: int | None) -> int:
    try:
        label = int(sample["cls"])
    except (KeyError, ValueError) as e:
        raise DataError(f"sample {key} of shard {url} has no class index ('cls': {sample.get('cls')!r})") from e
    if label < 0 or (num_classes is not None and label >= num_classes):
        allowed = f"0..{num_classes - 1}" if num_classes is not None else "0 or more"
        raise DataError(f"sample {key} of shard {url} has class index {label}, outside {allowed} "
                        "(the manifest's classes, or model.num_classes when set); the shards and the manifest or "
                        "the config disagree: run `python -m data_prep verify` on data.root")
    return label


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
    """Training batches for one rank: epoch `epoch` from `start_step`, then whole epochs up to `end_epoch`
    (exclusive; default: just the one), so that one DataLoader's workers can serve a whole run."""

    def __init__(self, split: Split, cfg: DataConfig, *, seed: int, epoch: int, start_step: int, steps: int,
                 local_batch: int, rank: int, world_size: int, num_classes: int | None = None,
                 end_epoch: int | None = None, accum_steps: int = 1) -> None:
        self.split, self.cfg, self.seed, self.epoch = split, cfg, seed, epoch
        self.start_step, self.steps, self.batch = start_step, steps, local_batch
        self.rank, self.world_size, self.num_classes = rank, world_size, num_classes
        # Gradient accumulation: a rank's batch is `accum_steps` micro-batches, each read as the batch of a
        # virtual rank (rank x accum_steps + j of world_size x accum_steps), so that accumulating on fewer
        # ranks trains on the same samples as more ranks without it.
        self.accum = accum_steps
        self.end_epoch = epoch + 1 if end_epoch is None else end_epoch
        self.preset = TrainPreset.from_config(cfg)

    def _raw(self, epoch: int, slot: int, n_slots: int) -> Iterator[tuple[Sample, int]]:
        order = list(range(len(self.split.urls)))
        random.Random(derive_seed(self.seed, "shards", epoch)).shuffle(order)
        shards, stride = _assign(len(order), slot, n_slots, order)
        for cycle in itertools.count():  # a reader that runs out starts over, reshuffled
            random.Random(derive_seed(self.seed, "cycle", epoch, slot, cycle)).shuffle(shards)
            for i, sample in enumerate(_read(self.split, shards, self.num_classes)):
                if i % stride == slot % stride:
                    yield sample, cycle

    def __iter__(self) -> Iterator[tuple]:
        w, n_workers = _worker()
        handed_out = 0  # batches of earlier epochs: the DataLoader's round robin over workers goes on
        for epoch in range(self.epoch, self.end_epoch):
            start = self.start_step if epoch == self.epoch else 0
            # This worker gets the epoch's batches start + first, start + first + n, ...
            yield from self._epoch(epoch, start, (w - handed_out) % n_workers, n_workers)
            handed_out += self.steps - start

    def _epoch(self, epoch: int, start: int, first: int, n_workers: int) -> Iterator[tuple]:
        logical = (first + start) % n_workers  # batch s of an epoch always comes from reader slot s % n
        skip = len(range(logical, start, n_workers))
        todo = len(range(start + first, self.steps, n_workers))
        micro = self.batch // self.accum
        streams = [self._slot(epoch, (self.rank * self.accum + j) * n_workers + logical,
                              self.world_size * self.accum * n_workers, skip * micro) for j in range(self.accum)]
        for _ in range(todo):
            items = [item for stream in streams for item in itertools.islice(stream, micro)]
            rngs = [random.Random(derive_seed(self.seed, "aug", epoch, s.key, cycle)) for s, cycle in items]
            yield _batch(self.preset, [s for s, _ in items], rngs, self.cfg.decode)

    def _slot(self, epoch: int, slot: int, n_slots: int, skip: int) -> Iterator[tuple[Sample, int]]:
        """One reader slot's shuffled samples of `epoch`, the first `skip` passed over as raw bytes."""
        rng = random.Random(derive_seed(self.seed, "buffer", epoch, slot))
        stream = _shuffled(self._raw(epoch, slot, n_slots), self.cfg.shuffle_buffer, rng)
        for _ in itertools.islice(stream, skip):
            pass
        return stream


class EvalStream(IterableDataset):
    """Every validation sample exactly once across ranks and workers, in batches of `local_batch`."""

    def __init__(self, split: Split, cfg: DataConfig, *, local_batch: int, rank: int, world_size: int,
                 num_classes: int | None = None) -> None:
        self.split, self.batch, self.rank, self.world_size = split, local_batch, rank, world_size
        self.preset, self.decode = EvalPreset(cfg.image_size, cfg.eval_resize, cfg.reduced_decode_margin), cfg.decode
        self.num_classes = num_classes

    def __iter__(self) -> Iterator[tuple]:
        w, n_workers = _worker()
        slot, n_slots = self.rank * n_workers + w, self.world_size * n_workers
        shards, stride = _assign(len(self.split.urls), slot, n_slots, list(range(len(self.split.urls))))
        read = _read(self.split, shards, self.num_classes)
        mine = (s for i, s in enumerate(read) if i % stride == slot % stride)
        while items := list(itertools.islice(mine, self.batch)):
            yield _batch(self.preset, items, [None] * len(items), self.decode)


def _batch(preset: TrainPreset | EvalPreset, items: list[Sample], rngs: Sequence[random.Random | None],
           decode: str) -> tuple[torch.Tensor, torch.Tensor] | gpu_decode.JpegBatch:
    """A uint8 image batch (decoded here), or for data.decode=gpu the JPEG bytes and plans to decode there.

    A sample that cannot be decoded is logged (shard and key) and left out of the loss and the accuracy:
    its label becomes IGNORE and its slot holds a copy of another image of the batch. The batch keeps its
    size, so every rank still takes the same number of steps; the loop counts these (`count_skipped`).
    """
    labels = [s.label for s in items]

    def attempt(i: int, work: Callable[..., Any], *args: Any) -> Any:
        try:
            return work(*args)
        except Exception as e:  # noqa: BLE001 - whatever the bytes are, one sample must not end the run
            log.warning("skipping sample %s of shard %s: it cannot be decoded (%s: %s)", items[i].key,
                        items[i].shard, type(e).__name__, first_line(e))
            labels[i] = IGNORE
            return None

    if decode == "gpu":
        plans = [attempt(i, preset.plan, s.data, rng) for i, (s, rng) in enumerate(zip(items, rngs))]
        good = [(s.data, *p) for s, p in zip(items, plans) if p is not None]
        if not good:
            raise DataError(f"no sample of a batch from shards {_shards_of(items)} can be decoded")
        draws = [preset.draw(rng) for rng in rngs]  # each after its plan's draws, as on the CPU path
        return gpu_decode.pack(((s.data, *p) if p else good[0] for s, p in zip(items, plans)), labels,
                               [s.key for s in items], [s.shard for s in items], preset.margin, draws)
    images = empty_batch(len(items), preset.size)  # each image is decoded and resized into its slot
    done = [attempt(i, preset.render_into, s.data, rng, images[i]) for i, (s, rng) in enumerate(zip(items, rngs))]
    decoded = [i for i, d in enumerate(done) if d is not None]
    if not decoded:
        raise DataError(f"no sample of a batch from shards {_shards_of(items)} can be decoded")
    for i in (i for i, d in enumerate(done) if d is None):
        images[i].copy_(images[decoded[0]])
    return images.permute(0, 3, 1, 2), torch.tensor(labels, dtype=torch.int64)


def _shards_of(items: list[Sample]) -> str:
    return ", ".join(sorted({s.shard for s in items}))


def count_skipped(labels: torch.Tensor, so_far: int, limit: int) -> int:
    """`so_far` plus the samples of this batch that could not be decoded; a DataError past `limit`.

    Call with the labels as the loader returns them (on the host, so this is no device sync)."""
    total = so_far + int((labels == IGNORE).sum())
    if total > limit:
        raise DataError(f"{total} training samples on this rank could not be decoded (the warnings above name "
                        f"each shard and key), more than data.max_bad_samples={limit}; run `python -m data_prep "
                        "verify` on data.root, or prepare the dataset again")
    return total


def _worker_init(rank_pid: int, worker_id: int) -> None:
    # A stop signal sent to a whole process group (SLURM, a terminal's Ctrl-C) must reach the rank only:
    # it decides when to stop, and a worker killed under it would crash the step instead of saving.
    # Workers instead die with their rank, however it ends (also before this function ran).
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    die_with_parent(rank_pid)


def check_decode(cfg: DataConfig, device: torch.device) -> None:
    """Raise a ConfigError naming data.decode when it asks for a GPU this run does not have."""
    if cfg.decode == "gpu":
        gpu_decode.check_device(device)


def _loader(stream: IterableDataset, cfg: DataConfig, device: torch.device,
            channels_last: bool = True) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    # checks CUDA
    decoder = gpu_decode.GpuDecoder(cfg.image_size, device, channels_last) if cfg.decode == "gpu" else None
    workers = cfg.workers
    loader = DataLoader(
        stream,
        batch_size=None,  # the streams batch themselves, so skipping stays raw
        num_workers=workers,
        pin_memory=device.type == "cuda",  # a pinned batch copies to the GPU asynchronously (Normalize)
        prefetch_factor=cfg.prefetch if workers else None,
        worker_init_fn=functools.partial(_worker_init, os.getpid()),
    )
    return gpu_decode.GpuBatches(loader, decoder) if decoder else loader


class TrainBatches:
    """A run's training batches: the loader starts when the loop first asks for a batch (once per run
    with data.persistent_workers, else once per epoch), samples that cannot be decoded are counted
    against data.max_bad_samples, and the wait for each batch is timed by `wait_timer` (data wait)."""

    def __init__(self, split: Split, cfg: DataConfig, device: torch.device, *, end_epoch: int,
                 wait_timer: Callable[[], contextlib.AbstractContextManager[Any]], channels_last: bool = True,
                 **stream_args: Any) -> None:
        self.split, self.cfg, self.device, self.wait_timer = split, cfg, device, wait_timer
        self.channels_last = channels_last  # data.decode=gpu: the layout of the normalised batch
        self.until_epoch = end_epoch if cfg.persistent_workers else None  # the workers' last epoch (exclusive)
        self.stream_args, self.skipped = stream_args, 0
        self._batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None

    def next(self, epoch: int, step_in_epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `step_in_epoch` of `epoch` (the loader continues where it is; a new one starts there)."""
        if self._batches is None:
            self._batches = iter(train_loader(self.split, self.cfg, self.device, self.channels_last, epoch=epoch,
                                              start_step=step_in_epoch, end_epoch=self.until_epoch,
                                              **self.stream_args))
        with self.wait_timer():
            images, targets = next(self._batches)
        self.skipped = count_skipped(targets, self.skipped, self.cfg.max_bad_samples)
        return images, targets

    def end_epoch(self) -> None:
        """Without persistent workers, this epoch's workers stop before validation starts its own."""
        if self.until_epoch is None:
            self.close()

    def close(self) -> None:
        """Stop the workers now (dropping the iterator shuts them down), not at interpreter exit."""
        self._batches = None


def train_loader(split: Split, cfg: DataConfig, device: torch.device, channels_last: bool = True,
                 **stream_args) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches: (images, int64 labels on the host). data.decode=cpu: uint8 NCHW images, stored
    channels-last, on the host (transforms.Normalize moves and normalises them). data.decode=gpu: float32
    images already normalised, on `device`, channels-last if `channels_last` (pass model.channels_last),
    which Normalize passes through unchanged."""
    return _loader(TrainStream(split, cfg, **stream_args), cfg, device, channels_last)


def eval_loader(split: Split, cfg: DataConfig, device: torch.device, channels_last: bool = True,
                **stream_args) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Validation batches, as train_loader's."""
    return _loader(EvalStream(split, cfg, **stream_args), cfg, device, channels_last)
