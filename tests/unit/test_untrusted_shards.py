"""Shards the trainer did not make: labels are range-checked, a sample that cannot be decoded is skipped
(logged with shard and key, left out of the loss) up to data.max_bad_samples, shard lengths must match
the manifest, and a failing `pipe:` command names the shard. Real shards, read by the real loader.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import re
import shutil
from pathlib import Path

import pytest
import torch

from trainer.config import DataConfig
from trainer.data.loader import _batch, _read, count_skipped, train_loader
from trainer.data.manifest import load_manifest
from trainer.data.transforms import TrainPreset
from trainer.errors import DataError
from trainer.step import IGNORE

from helpers.common import SHARD_SIZE
from helpers.datasets import copy_dataset
from helpers.images import cpu_decoder

STEPS = 3  # 24 of the fixture's 48 training images, one process, no workers


def one_epoch(root: Path, **cfg) -> list[tuple[torch.Tensor, torch.Tensor]]:
    config = DataConfig(root=str(root), workers=0, shuffle_buffer=16, image_size=32, eval_resize=36, **cfg)
    manifest = load_manifest(str(root))
    return list(train_loader(manifest.train, config, torch.device("cpu"), seed=3, epoch=0, start_step=0,
                                  steps=STEPS, local_batch=8, rank=0, world_size=1, num_classes=4))


@pytest.fixture(scope="module")
def one_bad_per_shard(shards: Path, tmp_path_factory) -> tuple[Path, set[tuple[str, str]]]:
    """The first JPEG of every training shard cut in half; returns the root and the (shard, key) pairs."""
    root = tmp_path_factory.mktemp("one-bad") / "data"
    jpegs = itertools.count()

    def cut(key: str, ext: str, b: bytes) -> bytes:
        first_of_shard = ext == "jpg" and next(jpegs) % SHARD_SIZE == 0
        return b[: len(b) // 2] if first_of_shard else b

    return root, set(copy_dataset(shards, root, cut))


def test_undecodable_samples_are_skipped_named_and_left_out_of_the_loss(one_bad_per_shard, shards: Path, caplog):
    root, bad = one_bad_per_shard
    assert len(bad) == 6
    with caplog.at_level(logging.WARNING, logger="trainer.data"):
        batches = one_epoch(root)
    clean = one_epoch(shards)
    skipped = re.findall(r"skipping sample (\S+) of shard (\S+): it cannot be decoded", caplog.text)
    assert skipped and {(shard, key) for key, shard in skipped} <= bad, caplog.text
    labels = torch.cat([y for _, y in batches])
    assert len(batches) == STEPS and all(len(y) == 8 for _, y in batches)  # batches keep their size
    assert int((labels == IGNORE).sum()) == len(skipped)
    # Every other sample is exactly what the clean dataset gives at that position.
    for (x, y), (cx, cy) in zip(batches, clean):
        keep = y != IGNORE
        assert torch.equal(y[keep], cy[keep]) and torch.equal(x[keep], cx[keep])
        for i in (~keep).nonzero().flatten().tolist():  # a stand-in: a copy of another image of the batch
            assert any(torch.equal(x[i], x[j]) for j in keep.nonzero().flatten().tolist())
    # The loss leaves them out: the same value as over the decodable samples alone.
    logits = torch.randn(8, 4)
    y = batches[0][1]
    loss = torch.nn.CrossEntropyLoss()(logits, y)
    assert torch.allclose(loss, torch.nn.CrossEntropyLoss()(logits[y >= 0], y[y >= 0]))


def test_past_max_bad_samples_the_count_is_an_error():
    labels = torch.tensor([0, IGNORE, 2, IGNORE])
    assert count_skipped(labels, 0, limit=2) == 2
    with pytest.raises(DataError, match=r"3 training samples on this rank could not be decoded .* more than "
                                             r"data.max_bad_samples=2"):
        count_skipped(labels, 1, limit=2)


def test_a_truncated_jpeg_is_refused_not_filled_grey(shards: Path, tmp_path: Path):
    root = tmp_path / "data"
    changed = copy_dataset(shards, root, lambda key, ext, b: b[: len(b) * 2 // 3] if ext == "jpg" else b)
    assert changed
    sample = next(_read(load_manifest(str(root)).train, [0], 4))
    with pytest.raises(ValueError, match="truncated"):  # the region decoder refuses it; no lenient decoder retries
        TrainPreset(32)(sample.data, random.Random(0))


def test_shard_lengths_that_do_not_match_the_shard_are_an_error(shards: Path):
    split = load_manifest(str(shards)).train
    inflated = dataclasses.replace(split, lengths=(split.lengths[0] + 5, *split.lengths[1:]))
    with pytest.raises(DataError, match=rf"shard {split.urls[0]} holds 8 samples but _info.json says 13"):
        list(_read(inflated, [0], 4))


def test_a_failing_pipe_command_names_the_shard(shards: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(shards, root)
    (root / "train" / "imagenet-train-000000.tar").unlink()
    split = load_manifest(f"pipe:cat {root}/{{name}}").train
    with pytest.raises(DataError, match=r"cannot read shard pipe:cat \S+/train/imagenet-train-000000\.tar"):
        list(_read(split, [0], 4))


def test_the_gpu_decode_path_skips_alike(one_bad_per_shard):
    """data.decode=gpu: workers only parse headers; one they cannot parse gets a stand-in and IGNORE."""
    root, bad = one_bad_per_shard
    split = load_manifest(str(root)).train
    items = list(itertools.islice(_read(split, [0], 4), 4))
    items[0] = items[0]._replace(data=b"not a jpeg")  # a cut-off JPEG still has its header; this has none
    batch = _batch(TrainPreset(32), items, [random.Random(i) for i in range(4)], "gpu")
    assert batch.labels.tolist() == [IGNORE] + [s.label for s in items[1:]]
    assert batch.keys == [s.key for s in items] and batch.shards == [s.shard for s in items]
    first = bytes(batch.data[batch.offsets[0]:batch.offsets[1]].numpy())
    assert first == items[1].data  # the stand-in is another sample's JPEG, so nvJPEG never sees the bad bytes


def test_a_cut_off_jpeg_on_the_gpu_path_is_skipped_where_it_is_decoded(one_bad_per_shard, caplog):
    """Its header parses in the worker, so the decoder finds it: label IGNORE, another image in its slot
    (decode_batch runs on the CPU here as it would on the GPU)."""
    root, bad = one_bad_per_shard
    split = load_manifest(str(root)).train
    items = list(itertools.islice(_read(split, [0], 4), 4))
    assert (items[0].shard, items[0].key) in bad  # the shard's first JPEG is cut in half
    batch = _batch(TrainPreset(32), items, [random.Random(i) for i in range(4)], "gpu")
    assert batch.labels.tolist() == [s.label for s in items]  # the worker saw nothing wrong
    with caplog.at_level(logging.WARNING):
        images, labels = cpu_decoder(32)(batch)
    assert f"skipping sample {items[0].key} of shard {items[0].shard}: it cannot be decoded on cpu" in caplog.text
    assert labels.tolist() == [IGNORE] + [s.label for s in items[1:]]
    assert images.shape == (4, 3, 32, 32) and torch.equal(images[0], images[1])
