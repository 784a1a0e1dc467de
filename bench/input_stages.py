"""Where the training loader's time goes: each stage timed alone on the same samples, side by side with the
alternative it replaced, then the whole loader (train_loader, workers=0), in one process, alternating
rounds, best of each. CPU milliseconds per image; the whole loader minus its stages is the per-sample and
per-batch Python around them.

  python -m bench.input_stages --images DIR [--max-short-side 256]
  python -m bench.input_stages --shards ROOT        # a dataset data_prep already prepared
  python -m bench.input_stages --only TrainPreset   # the stages whose name holds the text (augmentation cost)

Prepares DIR's photos with `python -m data_prep folder` as bench.input_pipeline does. The last line is one
JSON object with every figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import tempfile
import time
from collections.abc import Callable

import simplejpeg
import torch
import webdataset as wds
from torchvision.transforms import v2

from bench.input_pipeline import prepare, stage
from bench.samples import SAMPLES
from trainer.config import DataConfig
from trainer.data import augment, jpeg, tarstream, transforms
from trainer.data.loader import _read, _shuffled, train_loader
from trainer.data.manifest import load_manifest
from trainer.seeding import derive_seed


def stages(root: str, batch: int) -> dict[str, Callable[[], object]]:
    """Each stage as a function over every sample of the training split."""
    split = load_manifest(root).train
    samples = list(_read(split, list(range(len(split.urls))), None))
    jpegs = [s.data for s in samples if s.data is not None]
    preset = transforms.TrainPreset(224)
    plans = [preset.plan(j, random.Random(i)) for i, j in enumerate(jpegs)]
    boxes = []
    for plan, h, w in plans:
        k = transforms.dct_reduction(plan, preset.margin)
        boxes.append((k, transforms.crop_box(plan, *jpeg.decoded_size(h, w, k), h, w)))
    regions = [transforms._region(b[2], b[3]) for _, b in boxes]
    wholes = [torch.from_numpy(jpeg.decode(j, h, w, k)).permute(2, 0, 1)[None]
              for j, (_, h, w), (k, _) in zip(jpegs, plans, boxes)]
    cfg = DataConfig(root=root, workers=0, shuffle_buffer=1000)
    rounds = itertools.count()

    def read_with(reader: Callable[[str], object]) -> Callable[[], object]:
        return lambda: [list(reader(url)) for url in split.urls]  # type: ignore[call-overload]

    def ours(url: str) -> object:
        with open(url, "rb") as f:
            return list(tarstream.samples(f))

    def loader() -> None:
        for _ in train_loader(split, cfg, torch.device("cpu"), seed=0, epoch=next(rounds), start_step=0,
                                   steps=len(samples) // batch, local_batch=batch, rank=0, world_size=1):
            pass

    return {
        "tar reading: webdataset": read_with(lambda url: wds.tarfile_to_samples()(iter([{"url": url}]))),
        "tar reading: trainer.data.tarstream": read_with(ours),
        "shuffle buffer (1000)": lambda: list(_shuffled(iter(samples), 1000, random.Random(0))),
        "per-sample RNG (derive_seed + Random)": lambda: [random.Random(derive_seed(0, "aug", 0, s.key, 0))
                                                          for s in samples],
        "JPEG header + crop plan": lambda: [preset.plan(j, random.Random(i)) for i, j in enumerate(jpegs)],
        **_decode_and_render(jpegs, plans, boxes, regions, wholes, batch),
        "whole loader (workers=0)": loader,
        **_augmentation(jpegs, preset, batch),
    }


def _decode_and_render(jpegs: list, plans: list, boxes: list, regions: list, wholes: list,
                       batch: int) -> dict[str, Callable[[], object]]:
    """The decode and render stages over the same plans (decoded images are dropped at once, as in the
    loader: keeping 1,000 of them would time page faults)."""
    def decode_whole() -> None:
        for j in jpegs:
            simplejpeg.decode_jpeg(j, colorspace="RGB")

    def decode_reduced() -> None:
        for j, (_, h, w), (k, _) in zip(jpegs, plans, boxes):
            jpeg.decode(j, h, w, k)

    def decode_regions() -> None:
        for j, (_, h, w), (k, (top, left, _, _)), r in zip(jpegs, plans, boxes, regions):
            jpeg.decode_box(j, r[0], h, w, k, top, left, False)

    def resize_into_batch() -> None:  # what render_into does after decoding: resize, flip, copy into the slot
        for i, (r, (plan, _, _)) in enumerate(zip(regions, plans)):
            if i % batch == 0:
                images = transforms.empty_batch(batch, 224)
            resized = transforms._resize(r, size=(224, 224)) if r.shape[1:3] != (224, 224) else r[0]
            images[i % batch].copy_(resized.flip(1) if plan.flip else resized)

    def render_whole_then_collate() -> None:  # before: crop a whole decode, resize, flip, copy into the batch
        for i, (x, (plan, h, w)) in enumerate(zip(wholes, plans)):
            if i % batch == 0:
                images = transforms.empty_batch(batch, 224)
            images[i % batch].copy_(transforms.render(x, plan, 224, h, w)[0].permute(1, 2, 0))

    return {
        "decode: whole image (the decode limit)": decode_whole,
        "decode: whole image at the DCT reduction": decode_reduced,
        "decode: the crop's region": decode_regions,
        "crop + resize + flip + copy into the batch, whole decode": render_whole_then_collate,
        "resize + flip + copy into the batch, region": resize_into_batch,
    }


def _augmentation(jpegs: list, preset: transforms.TrainPreset, batch: int) -> dict[str, Callable[[], object]]:
    """The whole CPU preset per image, plain and with each augmentation (what data.auto_augment costs)."""
    trivial, rand = augment.AutoAugment("trivialaugment"), augment.AutoAugment("randaugment")

    def render_with(aug: augment.Augment | None) -> Callable[[], None]:
        def run() -> None:
            preset_aug = transforms.TrainPreset(224, augment=aug)
            for i, j in enumerate(jpegs):
                if i % batch == 0:
                    images = transforms.empty_batch(batch, 224)
                preset_aug.render_into(j, random.Random(i), images[i % batch])
        return run

    def torchvision_trivialaugment() -> None:  # its v2 transform on the same crops (torch's global RNG)
        ta = v2.TrivialAugmentWide()
        for i, j in enumerate(jpegs):
            ta(preset(j, random.Random(i)))

    return {
        "TrainPreset: RandomResizedCrop + flip": render_with(None),
        "TrainPreset: + TrivialAugmentWide": render_with(augment.Augment(trivial, 0)),
        "TrainPreset: + TrivialAugmentWide + random erasing 0.25": render_with(augment.Augment(trivial, 0.25)),
        "TrainPreset: + RandAugment(2, 9)": render_with(augment.Augment(rand, 0)),
        "TrainPreset: RandomResizedCrop + flip, then torchvision's v2.TrivialAugmentWide": torchvision_trivialaugment,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=SAMPLES)
    parser.add_argument("--shards", default=None, help="a prepared dataset root (then --images is not used)")
    parser.add_argument("--max-short-side", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--only", default="", help="time only the stages whose name contains this text")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result: dict = {"region_decode": jpeg.REGION_DECODE, "load_average_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or prepare(stage(args.images, tmp), tmp, args.max_short_side)[0]
        fns = {k: f for k, f in stages(shards, args.batch).items() if args.only in k}
        n = load_manifest(shards).train.num_samples
        best = {name: float("inf") for name in fns}
        for _ in range(args.rounds):  # alternate, so every stage sees the same machine load
            for name, fn in fns.items():
                start = time.process_time()
                fn()
                best[name] = min(best[name], time.process_time() - start)
    ms = {name: round(1000 * t / n, 4) for name, t in best.items()}
    used = ["tar reading: trainer.data.tarstream", "shuffle buffer (1000)", "per-sample RNG (derive_seed + Random)",
            "JPEG header + crop plan", "decode: the crop's region", "resize + flip + copy into the batch, region"]
    if all(k in ms for k in [*used, "whole loader (workers=0)"]):
        rest = ms["whole loader (workers=0)"] - sum(ms[k] for k in used)
        ms["rest of the loader (Python around the stages)"] = round(rest, 4)
    for name, v in ms.items():
        print(f"{name:>58}: {v:.3f} ms/image")
    result.update(ms=ms, images=n, max_short_side=args.max_short_side, load_average_after=list(os.getloadavg()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
