"""NVIDIA DALI's CPU pipeline on the same shards, for bench/input_pipeline.py: its WebDataset reader with the
index files data_prep writes, then the standard ImageNet recipe of DALI's examples, on the CPU.

Train: `readers.webdataset` (shuffled) -> `decoders.image_random_crop` (scale 0.08-1, ratio 3/4-4/3; only
the crop's region is decoded) -> `resize` to 224x224 (linear, antialiased) -> `crop_mirror_normalize` (coin
flip, CHW). Eval: `decoders.image` -> `resize(resize_shorter=256)` -> `crop_mirror_normalize(crop=224)`. The
output stays uint8, as ours does (normalisation belongs to the device on both sides). DALI runs synchronously
(no prefetching), so the CPU time of a run is exactly that of the batches it returned.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Iterator


def available() -> bool:
    return importlib.util.find_spec("nvidia.dali") is not None


def shards(root: str, split: str = "train") -> tuple[list[str], list[str]]:
    """The shard paths and their DALI index paths from `<root>/_info.json` (shards with samples)."""
    with open(os.path.join(root, "_info.json")) as f:
        s = json.load(f)["splits"][split]
    pairs = [(f, i) for f, i, n in zip(s["filenames"], s["index_filenames"], s["shard_lengths"]) if n]
    return [os.path.join(root, f) for f, _ in pairs], [os.path.join(root, i) for _, i in pairs]


def pipeline(root: str, kind: str, batch: int, threads: int, seed: int = 0, shuffle_buffer: int = 1000):
    """A built DALI CPU pipeline yielding (uint8 CHW images, cls bytes) batches."""
    from nvidia.dali import fn, pipeline_def, types

    paths, index_paths = shards(root)

    # device_id=None: CPU only (documented; DALI's type stubs say int)
    @pipeline_def(batch_size=batch, num_threads=threads, device_id=None, seed=seed,  # type: ignore[call-overload]
                  exec_async=False, exec_pipelined=False)
    def define():
        jpegs, labels = fn.readers.webdataset(paths=paths, index_paths=index_paths, ext=["jpg", "cls"],
                                              random_shuffle=kind == "train", initial_fill=shuffle_buffer,
                                              missing_component_behavior="error", name="reader")
        if kind == "train":
            images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB,
                                                   random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3],
                                                   num_attempts=10)
            images = fn.resize(images, resize_x=224, resize_y=224, interp_type=types.INTERP_LINEAR, antialias=True)
            images = fn.crop_mirror_normalize(images, dtype=types.UINT8, output_layout="CHW",
                                              mirror=fn.random.coin_flip(probability=0.5))
        else:
            images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
            images = fn.resize(images, resize_shorter=256, interp_type=types.INTERP_LINEAR, antialias=True)
            images = fn.crop_mirror_normalize(images, dtype=types.UINT8, output_layout="CHW", crop=(224, 224))
        return images, labels

    pipe = define()
    pipe.build()
    return pipe


def batches(pipe, n: int) -> Iterator[tuple[int, object]]:
    """`n` batches: (images in the batch, its images as a TensorList)."""
    for _ in range(n):
        images, _labels = pipe.run()
        yield len(images), images


def timed(root: str, kind: str, batch: int, threads: int, samples: int) -> tuple[int, float, float, float]:
    """As bench.input_pipeline.timed: (images after the first batch, wall s, CPU s of this process, first
    batch latency), for one pass over `samples` images."""
    start = time.perf_counter()
    pipe = pipeline(root, kind, batch, threads)
    steps = samples // batch
    it = batches(pipe, steps)
    next(it)
    n, wall, cpu = 0, time.perf_counter(), time.process_time()
    first = wall - start
    for count, _ in it:
        n += count
    return n, time.perf_counter() - wall, time.process_time() - cpu, first
