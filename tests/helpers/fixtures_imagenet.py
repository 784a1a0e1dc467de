"""Builders for tiny ImageNet-shaped test inputs made of real JPEG files: image folders, the
official archive layouts (a tar of class tars, a flat val tar, a devkit tar.gz with meta.mat),
the Kaggle CSVs, and the awkward files ImageNet really contains (CMYK, grayscale, PNG as .JPEG),
plus deep-pixel files (16-bit PNG, float TIFF).
"""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
from PIL import Image

from data_prep.synthetic import encode, make_image


def wnid(k: int) -> str:
    """WNID-like names whose sorted order is NOT creation order, to catch index mistakes."""
    return f"n{(k * 7919) % 1000:08d}"


def jpeg(k: int, classes: int, n: int, size: tuple[int, int] = (40, 48)) -> bytes:
    return encode(make_image(np.random.default_rng([k, n]), k, classes, size))


def cmyk_jpeg(size=(40, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_image(np.random.default_rng(1), 0, 2, size)).convert("CMYK").save(buf, "JPEG")
    return buf.getvalue()


def gray_jpeg(size=(40, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_image(np.random.default_rng(2), 0, 2, size)).convert("L").save(buf, "JPEG")
    return buf.getvalue()


def png_bytes(size=(40, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_image(np.random.default_rng(3), 0, 2, size)).save(buf, "PNG")
    return buf.getvalue()


def deep_pixels(size=(40, 48)) -> np.ndarray:
    """A smooth 0..1 pattern (gradient plus waves) with a dark and a bright half."""
    y, x = np.mgrid[0:size[0], 0:size[1]]
    return (0.15 + 0.7 * x / (size[1] - 1) + 0.1 * np.sin(y / 4.0)).clip(0, 1)


def png16_bytes(values: np.ndarray) -> bytes:
    """A real 16-bit grayscale PNG (PIL mode I;16) of uint16 `values`."""
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def float_tiff_bytes(values: np.ndarray, tags: dict[int, float] | None = None) -> bytes:
    """A real 32-bit float TIFF (PIL mode F); tags {340: lo, 341: hi} declare its sample range."""
    buf = io.BytesIO()
    Image.fromarray(values.astype(np.float32)).save(buf, "TIFF", **({"tiffinfo": tags} if tags else {}))
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg(0, 2, 999)
    return data[: len(data) // 2]


def image_folder(root: str, classes: int, per_class: int, prefix: str = "") -> dict[str, str]:
    """root/<wnid>/<wnid>_<n>.JPEG; returns key -> wnid."""
    labels = {}
    for k in range(classes):
        os.makedirs(os.path.join(root, wnid(k)), exist_ok=True)
        for n in range(per_class):
            key = f"{prefix}{wnid(k)}_{n}"
            with open(os.path.join(root, wnid(k), key + ".JPEG"), "wb") as f:
                f.write(jpeg(k, classes, n))
            labels[key] = wnid(k)
    return labels


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            _add(tf, name, data)
    return buf.getvalue()


def train_tar(path: str, classes: int, per_class: int,
              extra: dict[str, list[tuple[str, bytes]]] | None = None) -> dict[str, str]:
    """The official layout: a tar holding <wnid>.tar per class. Returns key -> wnid."""
    labels, extra = {}, extra or {}
    with tarfile.open(path, "w") as outer:
        for k in range(classes):
            w = wnid(k)
            members = [(f"{w}_{n}.JPEG", jpeg(k, classes, n)) for n in range(per_class)]
            members += extra.get(w, [])
            labels.update({os.path.splitext(os.path.basename(m))[0]: w for m, _ in members})
            _add(outer, f"{w}.tar", tar_bytes(members))
    return labels


def val_images(classes: int, count: int, seed: int = 5) -> list[tuple[str, str, bytes]]:
    """(file name, wnid, jpeg) for ILSVRC2012_val_<n>.JPEG with classes in random order."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        k = int(rng.integers(classes))
        out.append((f"ILSVRC2012_val_{i + 1:08d}.JPEG", wnid(k), jpeg(k, classes, 1000 + i)))
    return out


def val_tar(path: str, images: list[tuple[str, str, bytes]]) -> None:
    with open(path, "wb") as f:
        f.write(tar_bytes([(name, data) for name, _, data in images]))


def ilsvrc_ids(classes: int) -> dict[str, int]:
    """WNID -> ILSVRC2012_ID (1-based) in an order that is NOT sorted-WNID order."""
    wnids = [wnid(k) for k in range(classes)]
    order = wnids[1:] + wnids[:1]        # creation order, rotated: never sorted order
    assert order != sorted(wnids)
    return {w: i + 1 for i, w in enumerate(order)}


def devkit(path: str, classes: int, val_wnids: list[str], *, extra_ids: list[int] = ()) -> None:
    """ILSVRC2012_devkit_t12.tar.gz: data/meta.mat (real field layout, plus one non-leaf synset)
    and data/ILSVRC2012_validation_ground_truth.txt (one ILSVRC2012_ID per val image)."""
    import scipy.io

    ids = ilsvrc_ids(classes)
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"),
             ("num_children", "O"), ("children", "O"), ("wordnet_height", "O"),
             ("num_train_images", "O")]
    rows = [(np.array([[i]], np.uint16), np.array([w]), np.array([f"class {w}, thing"]),
             np.array(["gloss"]), np.array([[0]], np.uint8), np.zeros((1, 0), np.uint8),
             np.array([[0]], np.uint8), np.array([[1300]], np.uint16))
            for w, i in sorted(ids.items(), key=lambda x: x[1])]
    rows.append((np.array([[len(ids) + 1]], np.uint16), np.array(["n99999999"]),
                 np.array(["a parent"]), np.array(["gloss"]), np.array([[2]], np.uint8),
                 np.array([[1, 2]], np.uint8), np.array([[1]], np.uint8), np.array([[0]], np.uint16)))
    synsets = np.array(rows, dtype=dtype).reshape(-1, 1)
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"synsets": synsets})
    truth = "".join(f"{ids[w]}\n" for w in val_wnids) + "".join(f"{i}\n" for i in extra_ids)
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "ILSVRC2012_devkit_t12/data/meta.mat", mat.getvalue())
        _add(tf, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth.encode())


def kaggle_csv(path: str, images: list[tuple[str, str, bytes]]) -> None:
    """LOC_val_solution.csv: ImageId,PredictionString (WNID first, then a box)."""
    with open(path, "w") as f:
        f.write("ImageId,PredictionString\n")
        for name, w, _ in images:
            f.write(f"{os.path.splitext(name)[0]},{w} 10 20 30 40 {w} 1 2 3 4 \n")


def synset_mapping(path: str, classes: int) -> None:
    with open(path, "w") as f:
        for k in sorted(range(classes), key=wnid):
            f.write(f"{wnid(k)} kaggle name {k}, other\n")


def official_layout(root: str, classes: int = 4, per_class: int = 5, val_count: int = 9,
                    extra: dict[str, list[tuple[str, bytes]]] | None = None) -> dict:
    """The download-page files: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and
    ILSVRC2012_devkit_t12.tar.gz, plus Kaggle's CSV and synset mapping for the same val set.
    Returns paths and the true WNID of every image key."""
    os.makedirs(root, exist_ok=True)
    p = {name: os.path.join(root, name) for name in (
        "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz",
        "LOC_val_solution.csv", "LOC_synset_mapping.txt")}
    train = train_tar(p["ILSVRC2012_img_train.tar"], classes, per_class, extra)
    val = val_images(classes, val_count)
    val_tar(p["ILSVRC2012_img_val.tar"], val)
    devkit(p["ILSVRC2012_devkit_t12.tar.gz"], classes, [w for _, w, _ in val])
    kaggle_csv(p["LOC_val_solution.csv"], val)
    synset_mapping(p["LOC_synset_mapping.txt"], classes)
    labels = {"train": train, "val": {os.path.splitext(n)[0]: w for n, w, _ in val}}
    return {"paths": p, "labels": labels, "val": val, "wnids": sorted(wnid(k) for k in range(classes))}


def read_shard_samples(out: str, split: str) -> dict[str, dict[str, bytes]]:
    """key -> {"jpg": bytes, "cls": bytes} over all shards of a split listed in _info.json."""
    import json

    with open(os.path.join(out, "_info.json")) as f:
        info = json.load(f)
    samples: dict[str, dict[str, bytes]] = {}
    for fn in info["splits"][split]["filenames"]:
        with tarfile.open(os.path.join(out, fn)) as tf:
            for m in tf:
                key, _, ext = m.name.partition(".")
                samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return samples
