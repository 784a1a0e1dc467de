"""data_prep's plan names no machine's paths: parts prepared with the inputs at different paths (one
of them given relative to its working folder) merge into the dataset one machine makes, and a rerun
finishes a half-done run whose inputs moved. A plan of the older format is refused; atomic writes
leave the old file or the new one."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

import data_prep
from data_prep.__main__ import main
from data_prep.atomic import atomic_file, atomic_write

from helpers.fixtures_imagenet import cmyk_jpeg, image_folder, jpeg, official_layout, tar_bytes, truncated_jpeg, wnid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(data_prep.__file__)))
RUN = ["--shard-size", "4", "--workers", "1", "--no-progress"]
PATH_OPTIONS = {"--train", "--val", "--devkit"}


def _official(root: str) -> list[str]:
    """The download-page archives with a repaired, a rejected and a skipped (non-WNID) entry."""
    extra = {wnid(0): [("n_cmyk_1.JPEG", cmyk_jpeg())], wnid(1): [("n_trunc_1.JPEG", truncated_jpeg())]}
    p = official_layout(os.path.join(root, "dl"), classes=3, per_class=5, val_count=6, extra=extra)["paths"]
    with tarfile.open(p["ILSVRC2012_img_train.tar"], "a") as tf:
        data = tar_bytes([("junk_1.JPEG", jpeg(0, 3, 5))])
        info = tarfile.TarInfo("aaa_junk.tar")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return ["imagenet", "--train", "dl/ILSVRC2012_img_train.tar", "--val", "dl/ILSVRC2012_img_val.tar",
            "--devkit", "dl/ILSVRC2012_devkit_t12.tar.gz"]


def _folders(root: str) -> list[str]:
    """Class folders with a rejected image and a skipped lost+found."""
    image_folder(os.path.join(root, "train"), classes=3, per_class=5)
    image_folder(os.path.join(root, "val"), classes=3, per_class=2, prefix="v")
    with open(os.path.join(root, "train", wnid(1), "n_trunc_1.JPEG"), "wb") as f:
        f.write(truncated_jpeg())
    os.mkdir(os.path.join(root, "train", "lost+found"))
    return ["folder", "--train", "train", "--val", "val"]


def _at(args: list[str], root: str) -> list[str]:
    """`args` with its input paths (relative to the inputs' folder) under `root`."""
    return [os.path.join(root, a) if prev in PATH_OPTIONS else a for prev, a in zip([""] + args, args)]


def _tree(root: str) -> dict[str, bytes]:
    """Every file of a dataset folder, but the lock files (they name their holder)."""
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(root) for f in fs if f != ".lock"}


def _info(out: str) -> dict:
    with open(os.path.join(out, "_info.json")) as f:
        return json.load(f)


def _sources(info: dict) -> list[str]:
    return [e["source"] for kind in ("rejected", "repaired", "skipped") for e in info[kind]]


@pytest.fixture(scope="module", params=[_official, _folders], ids=["archives", "folders"])
def made(request, tmp_path_factory):
    """Inputs at <root>/a, the arguments naming them relative to that folder, and one run of them."""
    root = str(tmp_path_factory.mktemp(request.param.__name__.strip("_")))
    inputs = os.path.join(root, "a")
    args = request.param(inputs)
    single = os.path.join(root, "single")
    assert main(_at(args, inputs) + ["--out", single] + RUN) == 0
    info = _info(single)
    assert info["rejected"] and info["skipped"]        # sources in the plan and in done records
    assert all(s.startswith(inputs + os.sep) for s in _sources(info))
    return inputs, args, single


def test_parts_with_inputs_at_different_paths_merge_to_one_run(made, tmp_path):
    inputs, args, single = made
    elsewhere = str(tmp_path / "mnt" / "copy")
    shutil.copytree(inputs, elsewhere)
    out = str(tmp_path / "parts")
    # Part 1 on "another machine": the copy, named relative to its working folder.
    env = dict(os.environ, PYTHONPATH=REPO)
    part1 = subprocess.run([sys.executable, "-m", "data_prep"] + args + ["--out", out, "--num-parts", "2",
                                                                          "--part", "1"] + RUN,
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert part1.returncode == 0, part1.stderr
    assert "other parts are unfinished" in part1.stdout
    with gzip.open(os.path.join(out, "_prep", "plan.json.gz")) as f:
        plan = json.load(f)
    identity = json.dumps({k: v for k, v in plan.items() if k != "paths"})
    assert elsewhere not in identity and inputs not in identity
    # Part 0 with the inputs where the one-machine run had them finishes, then writes the manifest.
    assert main(_at(args, inputs) + ["--out", out, "--num-parts", "2", "--part", "0"] + RUN) == 0
    assert _tree(out) == _tree(single)
    os.remove(os.path.join(out, "_info.json"))
    assert main(["merge", out]) == 0
    assert _tree(out) == _tree(single)


def test_a_part_finishing_last_elsewhere_still_names_part_0s_inputs(made, tmp_path):
    inputs, args, single = made
    elsewhere = str(tmp_path / "mnt" / "copy")
    shutil.copytree(inputs, elsewhere)
    out = str(tmp_path / "parts")
    assert main(_at(args, inputs) + ["--out", out, "--num-parts", "2", "--part", "0"] + RUN) == 0
    assert main(_at(args, elsewhere) + ["--out", out, "--num-parts", "2", "--part", "1"] + RUN) == 0
    assert _tree(out) == _tree(single)  # the manifest `merge` would write, from the stored plan


def test_rerun_finishes_a_half_done_run_whose_inputs_moved(made, tmp_path, capsys):
    inputs, args, single = made
    before, after = str(tmp_path / "before"), str(tmp_path / "after")
    shutil.copytree(inputs, before)
    out = str(tmp_path / "out")
    assert main(_at(args, before) + ["--out", out] + RUN) == 0
    # Half done: every other shard and its done record gone, no manifest yet.
    files = [f for s in _info(out)["splits"].values() for f in s["filenames"]]
    for f in files[::2]:
        os.remove(os.path.join(out, f))
        os.remove(os.path.join(out, "_prep", "done", f.replace("/", "__") + ".json"))
    os.remove(os.path.join(out, "_info.json"))
    os.rename(before, after)
    capsys.readouterr()
    assert main(_at(args, after) + ["--out", out] + RUN) == 0
    assert f"{len(files) - len(files[::2])} kept from an earlier run" in capsys.readouterr().out
    info, want = _info(out), _info(single)
    assert all(s.startswith(after + os.sep) for s in _sources(info))     # where the inputs are now
    assert info["prep"]["train"] == os.path.join(after, args[2])
    # Same shards, same manifest but for where the inputs are.
    assert json.loads(json.dumps(info).replace(after, inputs)) == want


def test_a_plan_of_the_older_format_is_refused(made, tmp_path, capsys):
    inputs, args, single = made
    out = str(tmp_path / "old")
    shutil.copytree(single, out)
    plan_file = os.path.join(out, "_prep", "plan.json.gz")
    with gzip.open(plan_file) as f:
        plan = json.load(f)
    with gzip.open(plan_file, "wt") as f:
        json.dump(dict(plan, format=1), f)
    capsys.readouterr()
    assert main(_at(args, inputs) + ["--out", out] + RUN) == 2
    assert "plan of another data_prep version (plan format 1" in capsys.readouterr().err
    assert main(["merge", out]) == 2
    assert "new --out" in capsys.readouterr().err


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path):
    path = tmp_path / "_info.json"
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        with atomic_file(str(path)) as f:
            f.write(b"half of the new")
            raise OSError("disk full")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["_info.json"]     # no temp file left
    atomic_write(str(path), b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["_info.json"]
