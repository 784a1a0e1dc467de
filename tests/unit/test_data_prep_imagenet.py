"""data_prep `imagenet` on each official layout: every label right (devkit IDs are not in
sorted-WNID order), bad files repaired or rejected and listed, unsafe archive members refused,
and label files that do not match the images stop the run before any shard."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
import simplejpeg

from data_prep.__main__ import main

from helpers.fixtures_imagenet import (
    cmyk_jpeg,
    gray_jpeg,
    jpeg,
    official_layout,
    png_bytes,
    read_shard_samples,
    tar_bytes,
    truncated_jpeg,
    wnid,
)

RUN = ["--shard-size", "4", "--workers", "1", "--no-progress"]
BIG = jpeg(0, 4, 77, (80, 80))      # 6,400 px: over the --max-pixels 3000 used below


def _append_unsafe(tar_path: str) -> None:
    """Outer-archive members that must be refused: absolute path, .., symlink, hard link."""
    with tarfile.open(tar_path, "a") as tf:
        for name in ("/abs_escape.JPEG", "../dotdot_escape.JPEG"):
            info = tarfile.TarInfo(name)
            data = jpeg(0, 4, 88)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, kind in (("symlink_escape.JPEG", tarfile.SYMTYPE), ("hardlink_escape.JPEG", tarfile.LNKTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd"
            tf.addfile(info)


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    extra = {wnid(0): [("n_cmyk_1.JPEG", cmyk_jpeg()), ("../../inner_escape.JPEG", jpeg(0, 4, 9))],
             wnid(1): [("n02105855_2933.JPEG", png_bytes())],
             wnid(2): [("n_gray_1.JPEG", gray_jpeg()), ("n_trunc_1.JPEG", truncated_jpeg()),
                       ("n_big_1.JPEG", BIG)]}
    lay = official_layout(str(root / "download"), extra=extra)
    _append_unsafe(lay["paths"]["ILSVRC2012_img_train.tar"])
    p = lay["paths"]
    out = str(root / "out")
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        rc = main(["imagenet", "--train", p["ILSVRC2012_img_train.tar"], "--val", p["ILSVRC2012_img_val.tar"],
                   "--devkit", p["ILSVRC2012_devkit_t12.tar.gz"], "--out", out, "--max-pixels", "3000"] + RUN)
    assert rc == 0
    lay["summary"] = summary.getvalue()
    return root, lay, out


REJECTED = {"n_trunc_1", "n_big_1", "inner_escape", "abs_escape", "dotdot_escape", "symlink_escape",
            "hardlink_escape"}


def _check_labels(out: str, labels: dict, wnids: list[str], skip=()) -> None:
    for split, want in labels.items():
        got = read_shard_samples(out, split)
        assert set(got) == set(want) - set(skip), split
        for key, parts in got.items():
            assert int(parts["cls"]) == wnids.index(want[key]), key


def test_official_archives_label_every_image(official):
    _, lay, out = official
    _check_labels(out, lay["labels"], lay["wnids"], skip=REJECTED)
    info = json.load(open(os.path.join(out, "_info.json")))
    assert [c["wnid"] for c in info["classes"]] == lay["wnids"]
    assert info["classes"][0]["name"] == f"class {lay['wnids'][0]}"     # from meta.mat `words`
    assert info["splits"]["val"]["num_samples"] == len(lay["labels"]["val"])


def test_bad_files_become_rgb_jpegs(official):
    _, _, out = official
    info = json.load(open(os.path.join(out, "_info.json")))
    assert {r["key"]: r["repair"] for r in info["repaired"]} == {
        "n_cmyk_1": "cmyk->rgb", "n02105855_2933": "png->jpeg", "n_gray_1": "grayscale->rgb"}
    samples = read_shard_samples(out, "train")
    for key in ("n_cmyk_1", "n02105855_2933", "n_gray_1"):
        assert simplejpeg.decode_jpeg_header(samples[key]["jpg"])[2] == "YCbCr"
        assert simplejpeg.decode_jpeg(samples[key]["jpg"]).shape == (40, 48, 3)


def test_rejections_are_listed_and_nothing_else_dropped(official):
    root, lay, out = official
    info = json.load(open(os.path.join(out, "_info.json")))
    reasons = {r["key"]: r["reason"] for r in info["rejected"]}
    assert set(reasons) == REJECTED
    assert "truncated" in reasons["n_trunc_1"].lower() and "too many pixels" in reasons["n_big_1"]
    assert "rejected: 7" in lay["summary"] and "repaired: 3" in lay["summary"]
    assert all(f"{key}  " in lay["summary"] for key in REJECTED)
    for key in ("inner_escape", "abs_escape", "dotdot_escape", "symlink_escape", "hardlink_escape"):
        assert reasons[key].startswith("unsafe archive member refused")
    assert all(r["source"].startswith(lay["paths"]["ILSVRC2012_img_train.tar"]) for r in info["rejected"])
    # Refused members were never written anywhere.
    for top in (str(root), os.getcwd(), "/"):
        assert not [f for f in os.listdir(top) if "escape" in f]
    assert not [f for d, _, fs in os.walk(root) for f in fs if "escape" in f]


def test_kaggle_layout_and_names(tmp_path, official):
    _, lay, _ = official
    base = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    for key, w in lay["labels"]["train"].items():
        if key.startswith("n_") or key in REJECTED or key.startswith("n02105855"):
            continue
        os.makedirs(base / "train" / w, exist_ok=True)
        k = [wnid(i) for i in range(4)].index(w)
        (base / "train" / w / f"{key}.JPEG").write_bytes(jpeg(k, 4, int(key.split("_")[1])))
    os.makedirs(base / "val")
    for name, _, data in lay["val"]:
        (base / "val" / name).write_bytes(data)
    for f in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        shutil.copy(lay["paths"][f], tmp_path / f)
    out = str(tmp_path / "out")
    assert main(["imagenet", "--train", str(base / "train"), "--val", str(base / "val"),
                 "--val-labels", str(tmp_path / "LOC_val_solution.csv"), "--out", out] + RUN) == 0
    train = {k: w for k, w in lay["labels"]["train"].items() if (base / "train" / w / f"{k}.JPEG").exists()}
    _check_labels(out, {"train": train, "val": lay["labels"]["val"]}, lay["wnids"])
    info = json.load(open(os.path.join(out, "_info.json")))
    k0 = [wnid(i) for i in range(4)].index(lay["wnids"][0])
    assert info["classes"][0]["name"] == f"kaggle name {k0}"


def test_folder_of_class_tars_and_val_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    labels = {"train": {}, "val": {}}
    for k in range(3):
        members = [(f"{wnid(k)}_{n}.JPEG", jpeg(k, 3, n)) for n in range(4)]
        (tmp_path / "train" / f"{wnid(k)}.tar").write_bytes(tar_bytes(members))
        labels["train"].update({f"{wnid(k)}_{n}": wnid(k) for n in range(4)})
        os.makedirs(tmp_path / "val" / wnid(k))
        (tmp_path / "val" / wnid(k) / f"ILSVRC2012_val_{k + 1:08d}.JPEG").write_bytes(jpeg(k, 3, 50))
        labels["val"][f"ILSVRC2012_val_{k + 1:08d}"] = wnid(k)
    out = str(tmp_path / "out")
    assert main(["imagenet", "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val"),
                 "--out", out] + RUN) == 0
    _check_labels(out, labels, sorted(wnid(k) for k in range(3)))


def _csv_rows(lay, drop=0, add=None, wnid_of_first=None):
    rows = [(os.path.splitext(n)[0], w) for n, w, _ in lay["val"]][drop:]
    if wnid_of_first:
        rows[0] = (rows[0][0], wnid_of_first)
    rows += add or []
    return "ImageId,PredictionString\n" + "".join(f"{k},{w} 1 2 3 4\n" for k, w in rows)


@pytest.mark.parametrize("case, message", [
    ("csv_missing", "1 images have no label"),
    ("csv_extra", "labels name images that are not there"),
    ("csv_unknown_wnid", "not classes of the train set"),
    ("devkit_extra_ids", "labels name images that are not there"),
    ("devkit_unknown_id", "not leaf classes in meta.mat"),
])
def test_label_file_mismatch_stops_before_any_shard(official, tmp_path, capsys, case, message):
    from helpers.fixtures_imagenet import devkit

    _, lay, _ = official
    p = lay["paths"]
    args = ["imagenet", "--train", p["ILSVRC2012_img_train.tar"], "--val", p["ILSVRC2012_img_val.tar"]]
    if case.startswith("csv"):
        label_file = tmp_path / "LOC_val_solution.csv"
        label_file.write_text(_csv_rows(lay, drop=case == "csv_missing",
                                        add=[("ILSVRC2012_val_00009999", wnid(0))] if case == "csv_extra" else None,
                                        wnid_of_first="n99999999" if case == "csv_unknown_wnid" else None))
        args += ["--val-labels", str(label_file)]
    else:
        label_file = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
        extra = [1, 2] if case == "devkit_extra_ids" else [5]      # ID 5 is the non-leaf synset
        vw = [w for _, w, _ in lay["val"]]
        devkit(str(label_file), 4, vw if case == "devkit_extra_ids" else vw[:-1], extra_ids=extra)
        args += ["--devkit", str(label_file)]
    out = tmp_path / "out"
    assert main(args + ["--out", str(out)] + RUN) == 2
    err = capsys.readouterr().err
    assert str(label_file) in err and message in err
    assert not out.exists() or not [f for d, _, fs in os.walk(out) for f in fs]


def test_compressed_archive_is_a_clear_error(tmp_path, capsys):
    import gzip

    (tmp_path / "train.tar").write_bytes(gzip.compress(tar_bytes([(f"{wnid(0)}.tar", tar_bytes([]))])))
    assert main(["imagenet", "--train", str(tmp_path / "train.tar"), "--out", str(tmp_path / "o")] + RUN) == 2
    assert "gzip-compressed" in capsys.readouterr().err


def test_pixel_arrays_of_repaired_cmyk_keep_colour(official):
    _, _, out = official
    from data_prep.synthetic import make_image

    original = make_image(np.random.default_rng(1), 0, 2, (40, 48)).astype(float)
    got = simplejpeg.decode_jpeg(read_shard_samples(out, "train")["n_cmyk_1"]["jpg"]).astype(float)
    assert np.abs(got.mean((0, 1)) - original.mean((0, 1))).max() < 12
