"""data_prep `folder` and `synthetic`: every image lands exactly once with the right label,
the manifest matches the shards, shards are shuffled, and plain webdataset reads them."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections import Counter

import numpy as np
import pytest
import simplejpeg

from data_prep.__main__ import main

from helpers.fixtures_imagenet import image_folder


def read_shards(out: str, split: str) -> list[list[tuple[str, int]]]:
    """(key, cls) per sample, per shard, in manifest order, checking jpg+cls pairs."""
    info = json.load(open(os.path.join(out, "_info.json")))
    shards = []
    for fn in info["splits"][split]["filenames"]:
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(os.path.join(out, fn)) as tf:
            for m in tf:
                key, ext = m.name.split(".", 1)
                members.setdefault(key, {})[ext] = tf.extractfile(m).read()
        for key, parts in members.items():
            assert set(parts) == {"jpg", "cls"}, key
            assert simplejpeg.decode_jpeg(parts["jpg"]).shape[2] == 3
        shards.append([(k, int(p["cls"].decode())) for k, p in members.items()])
    return shards


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    train = image_folder(str(root / "train"), classes=5, per_class=12)
    val = image_folder(str(root / "val"), classes=5, per_class=3, prefix="v")
    out = str(root / "out")
    rc = main(["folder", "--train", str(root / "train"), "--val", str(root / "val"), "--out", out,
               "--shard-size", "10", "--workers", "1", "--seed", "3", "--no-progress"])
    assert rc == 0
    return root, out, {"train": train, "val": val}


def test_every_image_once_with_sorted_wnid_label(prepared):
    _, out, labels = prepared
    for split in ("train", "val"):
        got = [s for shard in read_shards(out, split) for s in shard]
        keys = Counter(k for k, _ in got)
        assert keys == Counter(set(labels[split]))     # each source image exactly once
        wnids = sorted(set(labels["train"].values()))
        assert all(c == wnids.index(labels[split][k]) for k, c in got)


def test_manifest_matches_shards(prepared):
    _, out, labels = prepared
    info = json.load(open(os.path.join(out, "_info.json")))
    wnids = sorted(set(labels["train"].values()))
    assert [c["wnid"] for c in info["classes"]] == wnids
    assert [c["index"] for c in info["classes"]] == list(range(len(wnids)))
    assert info["rejected"] == []
    for split, shards in (("train", read_shards(out, "train")), ("val", read_shards(out, "val"))):
        s = info["splits"][split]
        assert s["name"] == split and s["num_samples"] == len(labels[split])
        assert s["shard_lengths"] == [len(x) for x in shards]
        for fn, sha, size in zip(s["filenames"], s["shard_sha256"], s["shard_bytes"]):
            assert fn.startswith(f"{split}/imagenet-{split}-") and fn.endswith(".tar")
            data = open(os.path.join(out, fn), "rb").read()
            assert hashlib.sha256(data).hexdigest() == sha and len(data) == size
    assert info["splits"]["train"]["filenames"][0] == "train/imagenet-train-000000.tar"
    assert not [f for d, _, fs in os.walk(out) for f in fs if f.endswith(".tmp")]


def test_shards_are_shuffled_not_class_sorted(prepared):
    _, out, _ = prepared
    shards = read_shards(out, "train")
    assert len(shards) == 6
    assert all(len({c for _, c in shard}) >= 2 for shard in shards)
    flat = [c for shard in shards for _, c in shard]
    assert flat != sorted(flat)


def test_plain_webdataset_reads_shards(prepared):
    import webdataset as wds

    _, out, labels = prepared
    info = json.load(open(os.path.join(out, "_info.json")))
    urls = [os.path.join(out, f) for f in info["splits"]["val"]["filenames"]]
    ds = wds.WebDataset(urls, shardshuffle=False).decode("rgb8").to_tuple("__key__", "jpg", "cls")
    seen = {key: (img.shape, cls) for key, img, cls in ds}
    assert set(seen) == set(labels["val"])
    assert all(shape[2] == 3 and isinstance(cls, int) for shape, cls in seen.values())


def test_workers_and_reruns_give_identical_bytes(prepared, tmp_path):
    root, out, _ = prepared
    other = str(tmp_path / "out2")
    args = ["folder", "--train", str(root / "train"), "--val", str(root / "val"),
            "--shard-size", "10", "--seed", "3", "--no-progress"]
    assert main(args + ["--out", other, "--workers", "2"]) == 0
    assert main(args + ["--out", other, "--workers", "2"]) == 0    # rerun keeps everything
    for d, _, files in os.walk(out):
        for f in files:
            if f == ".lock":            # names its holder (pid, time): not part of the dataset
                continue
            rel = os.path.relpath(os.path.join(d, f), out)
            assert open(os.path.join(out, rel), "rb").read() == open(os.path.join(other, rel), "rb").read(), rel


def test_synthetic_is_deterministic_and_colour_coded(tmp_path):
    args = ["--classes", "4", "--train-per-class", "3", "--val-per-class", "2", "--seed", "1"]
    assert main(["synthetic", "--out", str(tmp_path / "a")] + args) == 0
    assert main(["synthetic", "--out", str(tmp_path / "b")] + args) == 0
    files = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "a")
                   for d, _, fs in os.walk(tmp_path / "a") for f in fs)
    assert len(files) == 4 * 3 + 4 * 2
    assert "train/n00000000/n00000000_0.JPEG" in files
    assert any(f.startswith("val/n0000000") and "ILSVRC2012_val_00000001.JPEG" in f for f in files)
    for f in files:
        assert open(tmp_path / "a" / f, "rb").read() == open(tmp_path / "b" / f, "rb").read()
    # The mean colour of each class is far from every other class's: learnable from any crop.
    means = [np.mean([simplejpeg.decode_jpeg(open(tmp_path / "a" / f, "rb").read()).mean((0, 1))
                      for f in files if f.startswith(f"train/n{k:08d}")], 0) for k in range(4)]
    dists = [np.linalg.norm(means[i] - means[j]) for i in range(4) for j in range(i + 1, 4)]
    assert min(dists) > 60
