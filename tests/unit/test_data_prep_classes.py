"""data_prep and what is not a class: `lost+found`, non-WNID folders/tars (imagenet mode) and loose
files are skipped and listed (summary and _info.json) without shifting any label; an empty class
or a WNID the devkit does not know stops the run (exit 2) naming the folder or tar."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile

import pytest

from data_prep.__main__ import main

from helpers.fixtures_imagenet import (
    devkit,
    image_folder,
    jpeg,
    official_layout,
    read_shard_samples,
    tar_bytes,
    val_images,
    wnid,
)

RUN = ["--shard-size", "4", "--workers", "1", "--no-progress"]
NOT_WNID = "not a WNID (n + 8 digits), so not an ImageNet class"
LOST = "lost+found is the file system's recovery folder, never a class"


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, out.getvalue(), err.getvalue()


def _labels_ok(out: str, split: str, want: dict[str, str], wnids: list[str]) -> None:
    got = read_shard_samples(out, split)
    assert {k: int(p["cls"]) for k, p in got.items()} == {k: wnids.index(w) for k, w in want.items()}


def test_imagenet_class_tars_with_devkit_skip_lost_found_and_strays(tmp_path):
    """Folder of class tars + flat val folder + devkit, each with the clutter of a real volume."""
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir()
    labels = {}
    for k in range(3):
        members = [(f"{wnid(k)}_{n}.JPEG", jpeg(k, 3, n)) for n in range(3)]
        (train / f"{wnid(k)}.tar").write_bytes(tar_bytes(members))
        labels.update({f"{wnid(k)}_{n}": wnid(k) for n in range(3)})
    (train / "lost+found").mkdir()
    (train / "backup").mkdir()
    (train / "backup" / "old_1.JPEG").write_bytes(jpeg(0, 3, 9))   # images, but not a class
    (train / "extras.tar").write_bytes(tar_bytes([("x_1.JPEG", jpeg(1, 3, 9))]))
    (train / "README.txt").write_text("notes")
    vimgs = val_images(3, 6)
    val.mkdir()
    (val / "lost+found").mkdir()
    for name, _, data in vimgs:
        (val / name).write_bytes(data)
    devkit(str(tmp_path / "devkit.tar.gz"), 3, [w for _, w, _ in vimgs])
    out = str(tmp_path / "out")
    rc, summary, err = _run(["imagenet", "--train", str(train), "--val", str(val), "--devkit",
                             str(tmp_path / "devkit.tar.gz"), "--out", out] + RUN)
    assert rc == 0, err
    wnids = sorted(wnid(k) for k in range(3))
    info = json.load(open(os.path.join(out, "_info.json")))
    assert [c["wnid"] for c in info["classes"]] == wnids
    _labels_ok(out, "train", labels, wnids)
    _labels_ok(out, "val", {os.path.splitext(n)[0]: w for n, w, _ in vimgs}, wnids)
    skipped = {(s["split"], os.path.basename(s["source"])): s["reason"] for s in info["skipped"]}
    assert skipped == {("train", "lost+found"): LOST, ("train", "backup"): NOT_WNID,
                       ("train", "extras.tar"): NOT_WNID,
                       ("train", "README.txt"): "a file beside the class tars, not in any class",
                       ("val", "lost+found"): LOST}
    assert "skipped: 5 (not classes, listed in _info.json)" in summary
    assert f"train {train / 'backup'}  ({NOT_WNID})" in summary


def test_imagenet_official_archive_skips_a_non_wnid_tar(tmp_path):
    lay = official_layout(str(tmp_path / "dl"), classes=3, per_class=2, val_count=4)
    p = lay["paths"]
    with tarfile.open(p["ILSVRC2012_img_train.tar"], "a") as tf:
        data = tar_bytes([("junk_1.JPEG", jpeg(0, 3, 5))])
        info = tarfile.TarInfo("aaa_junk.tar")       # sorts before every WNID: would shift all labels
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    out = str(tmp_path / "out")
    rc, _, err = _run(["imagenet", "--train", p["ILSVRC2012_img_train.tar"],
                       "--val", p["ILSVRC2012_img_val.tar"],
                       "--devkit", p["ILSVRC2012_devkit_t12.tar.gz"], "--out", out] + RUN)
    assert rc == 0, err
    _labels_ok(out, "train", lay["labels"]["train"], lay["wnids"])
    _labels_ok(out, "val", lay["labels"]["val"], lay["wnids"])
    info = json.load(open(os.path.join(out, "_info.json")))
    assert info["num_classes"] == 3
    assert info["skipped"] == [{"source": f"{p['ILSVRC2012_img_train.tar']}:aaa_junk.tar",
                                "reason": NOT_WNID, "split": "train"}]


def test_folder_mode_skips_lost_found_and_reports_loose_files(tmp_path):
    labels = image_folder(str(tmp_path / "train"), classes=3, per_class=2)
    (tmp_path / "train" / "lost+found").mkdir()
    (tmp_path / "train" / "stray.JPEG").write_bytes(jpeg(0, 3, 7))
    out = str(tmp_path / "out")
    rc, summary, err = _run(["folder", "--train", str(tmp_path / "train"), "--out", out] + RUN)
    assert rc == 0, err
    wnids = sorted(set(labels.values()))
    _labels_ok(out, "train", labels, wnids)
    info = json.load(open(os.path.join(out, "_info.json")))
    assert [(os.path.basename(s["source"]), s["reason"]) for s in info["skipped"]] == [
        ("lost+found", LOST), ("stray.JPEG", "a file at the root of a class-folder tree, not in any class")]
    assert "skipped: 2" in summary


def _empty_folder_class(tmp_path) -> tuple[list[str], str]:
    image_folder(str(tmp_path / "train"), classes=2, per_class=2)
    empty = tmp_path / "train" / "n00000500"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here")
    return ["--train", str(tmp_path / "train")], f"class folder {empty} holds no images"


def _empty_archive_class(tmp_path) -> tuple[list[str], str]:
    lay = official_layout(str(tmp_path / "dl"), classes=2, per_class=2, val_count=2)
    tar = lay["paths"]["ILSVRC2012_img_train.tar"]
    with tarfile.open(tar, "a") as tf:
        data = tar_bytes([("readme.txt", b"x")])
        info = tarfile.TarInfo("n00000500.tar")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return ["--train", tar], f"class tar {tar}:n00000500.tar holds no images"


@pytest.mark.parametrize("command, make", [("folder", _empty_folder_class), ("imagenet", _empty_folder_class),
                                           ("imagenet", _empty_archive_class)])
def test_empty_class_is_an_error_naming_it(tmp_path, command, make):
    args, message = make(tmp_path)
    out = tmp_path / "out"
    rc, _, err = _run([command, *args, "--out", str(out)] + RUN)
    assert rc == 2 and message in err, err
    assert "shift the labels" in err and not out.exists()


def test_wnid_folder_unknown_to_the_devkit_is_an_error(tmp_path):
    image_folder(str(tmp_path / "train"), classes=2, per_class=2)
    os.makedirs(tmp_path / "train" / "n12345678")
    (tmp_path / "train" / "n12345678" / "a_1.JPEG").write_bytes(jpeg(0, 2, 3))
    vimgs = val_images(2, 2)
    devkit(str(tmp_path / "devkit.tar.gz"), 2, [w for _, w, _ in vimgs])
    out = tmp_path / "out"
    rc, _, err = _run(["imagenet", "--train", str(tmp_path / "train"), "--devkit",
                       str(tmp_path / "devkit.tar.gz"), "--out", str(out)] + RUN)
    assert rc == 2, err
    meta = f"{tmp_path / 'devkit.tar.gz'}:data/meta.mat"
    assert f"class folders/tars ['n12345678'] are not classes in {meta}" in err
    assert not out.exists()
