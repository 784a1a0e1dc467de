"""The dataset manifest: `<root>/_info.json` (timm's schema plus our class list) read and checked.

A manifest is data, not code (it may come with a dataset someone else prepared): every file name and
length is checked before the loader uses it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import webdataset as wds

from trainer.data import storage
from trainer.errors import DataError


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
    """Read `<root>/_info.json` (timm's schema plus our class list).

    The manifest is data, not code (it may come with a dataset someone else prepared): file names must
    be plain relative names and lengths non-negative integers, or a DataError names the entry.
    """
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
    try:
        train = _manifest_split(info, "train", root, path)
        val = _manifest_split(info, "val", root, path)
        classes = sorted(info.get("classes") or [], key=lambda c: int(c["index"]))
        names = tuple(str(c.get("name") or c["wnid"]) for c in classes)
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # not the schema: a field missing or mistyped
        raise DataError(f"{path} is not a dataset manifest in the expected schema ({type(e).__name__}: {e}); "
                        f"{_verify_hint(root)}") from e
    if train is None or train.num_samples == 0:
        raise DataError(f"{path} has no training samples (splits.train is missing or empty)")
    return Manifest(train, val, names)


def _verify_hint(root: str) -> str:
    where = root if storage.is_local(root) else "<a local copy of the dataset>"
    return (f"check the dataset with `python -m data_prep verify {where}`, or prepare it again with "
            "`python -m data_prep`")


def _manifest_split(info: dict, name: str, root: str, path: str) -> Split | None:
    """One split of the manifest, every file name and length checked before it is used."""
    s = info["splits"].get(name)
    if not s:
        return None
    filenames, lengths = s["filenames"], s["shard_lengths"]
    if not isinstance(filenames, list) or not isinstance(lengths, list) or len(filenames) != len(lengths):
        raise DataError(f"{path}: splits.{name}.filenames and splits.{name}.shard_lengths must be lists of the "
                        f"same length; {_verify_hint(root)}")
    for i, (filename, length) in enumerate(zip(filenames, lengths)):
        if not storage.is_safe_name(filename):
            # Never opened and never handed to a data.root command: a manifest must not reach a shell
            # (`$(...)`, `;`) or a file outside the dataset (an absolute path, "..").
            raise DataError(
                f"{path}: splits.{name}.filenames[{i}] = {filename!r} is not a plain relative file name "
                "(letters, digits and '._-/' only; no absolute path, no '..', no leading '-' or '.'), so it "
                f"is not opened; {_verify_hint(root)}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise DataError(f"{path}: splits.{name}.shard_lengths[{i}] = {length!r} is not a sample count "
                            f"(an integer >= 0); {_verify_hint(root)}")
    return Split(tuple(storage.join(root, n) for n in filenames), tuple(lengths))


def steps_per_epoch(split: Split, global_batch: int) -> int:
    steps = split.num_samples // global_batch
    if steps == 0:
        raise DataError(
            f"train.batch_size={global_batch} is larger than the training set ({split.num_samples} samples)"
        )
    return steps
