"""data_prep resume, parts/merge, verify and timm: a run killed with SIGKILL and rerun gives the
same bytes as an uninterrupted run; P parts plus `merge` give the same dataset; `verify` catches
one flipped byte; timm's WebDataset reader reads the shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import data_prep
from data_prep.__main__ import main

from helpers.fixtures_imagenet import official_layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(data_prep.__file__)))


def _args(lay: dict, out: str) -> list[str]:
    p = lay["paths"]
    return ["imagenet", "--train", p["ILSVRC2012_img_train.tar"], "--val", p["ILSVRC2012_img_val.tar"],
            "--devkit", p["ILSVRC2012_devkit_t12.tar.gz"], "--out", out, "--shard-size", "4",
            "--no-progress"]


def _tree(root: str) -> dict[str, bytes]:
    """Every file of a dataset folder, but the lock files (they name their holder: pid, time)."""
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(root) for f in fs if f != ".lock"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The download-page layout and one uninterrupted run of it."""
    root = tmp_path_factory.mktemp("resume")
    lay = official_layout(str(root / "download"), classes=5, per_class=8, val_count=10)
    out = str(root / "single")
    assert main(_args(lay, out) + ["--workers", "1"]) == 0
    return root, lay, out


def test_resume_after_sigkill_is_byte_identical(dataset, tmp_path):
    _, lay, single = dataset
    out = str(tmp_path / "killed")
    done_dir = os.path.join(out, "_prep", "done")
    env = dict(os.environ, PYTHONPATH=REPO, DATA_PREP_TEST_SHARD_DELAY="0.3")
    cmd = [sys.executable, "-m", "data_prep"] + _args(lay, out) + ["--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def finished() -> list[str]:
        names = os.listdir(done_dir) if os.path.isdir(done_dir) else []
        return sorted(f for f in names if f.endswith(".json"))     # not temp files being written

    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and len(finished()) < 3:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    splits = json.load(open(os.path.join(single, "_info.json")))["splits"]
    total = sum(len(s["filenames"]) for s in splits.values())
    done = finished()
    assert 3 <= len(done) < total and not os.path.exists(os.path.join(out, "_info.json"))

    shards = [os.path.join(out, f[: -len(".json")].replace("__", "/")) for f in done]
    stamps = {s: os.stat(s).st_mtime_ns for s in shards}
    with open(shards[0], "r+b") as f:           # a damaged finished shard must be rewritten
        f.seek(2000)
        b = f.read(1)
        f.seek(2000)
        f.write(bytes([b[0] ^ 0xFF]))

    env.pop("DATA_PREP_TEST_SHARD_DELAY")
    rerun = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(shards) - 1} kept from an earlier run" in rerun.stdout
    assert all(os.stat(s).st_mtime_ns == stamps[s] for s in shards[1:])     # kept, not rewritten
    assert _tree(out) == _tree(single)


def test_parts_then_merge_equal_one_run(dataset, tmp_path, capsys):
    _, lay, single = dataset
    out = str(tmp_path / "parts")
    assert main(_args(lay, out) + ["--workers", "1", "--num-parts", "3", "--part", "1"]) == 0
    assert main(_args(lay, out) + ["--workers", "1", "--num-parts", "3", "--part", "0"]) == 0
    assert not os.path.exists(os.path.join(out, "_info.json"))
    assert main(["merge", out]) == 2                           # part 2 is missing
    assert "missing" in capsys.readouterr().err
    assert main(_args(lay, out) + ["--workers", "1", "--num-parts", "3", "--part", "2"]) == 0
    os.remove(os.path.join(out, "_info.json"))                 # written by the last part; merge again
    assert main(["merge", out]) == 0
    assert _tree(out) == _tree(single)


def test_changed_arguments_refuse_to_mix_with_existing_shards(dataset, capsys):
    _, lay, single = dataset
    assert main(_args(lay, single) + ["--workers", "1", "--seed", "7"]) == 2
    assert "different plan" in capsys.readouterr().err


def test_verify_passes_then_catches_one_flipped_byte(dataset, tmp_path, capsys):
    import shutil

    _, _, single = dataset
    out = str(tmp_path / "copy")
    shutil.copytree(single, out)
    assert main(["verify", out, "--workers", "2"]) == 0
    assert "OK" in capsys.readouterr().out
    info = json.load(open(os.path.join(out, "_info.json")))
    victim = info["splits"]["val"]["filenames"][1]
    with open(os.path.join(out, victim), "r+b") as f:
        f.seek(1536 + 700)                     # inside the first sample's JPEG data
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x55]))
    assert main(["verify", out, "--workers", "1"]) == 1
    report = capsys.readouterr().out
    assert "FAILED" in report and f"{victim}: sha256 differs" in report


def test_timm_wds_reader_reads_shards(dataset):
    from timm.data import create_dataset

    _, lay, single = dataset
    wnids = lay["wnids"]
    ds = create_dataset("wds/imagenet", root=single, split="val", is_training=False)
    got = [(img.size, target) for img, target in ds]
    assert len(got) == len(lay["labels"]["val"])
    want = sorted(wnids.index(w) for w in lay["labels"]["val"].values())
    assert sorted(t for _, t in got) == want
    assert all(size == (48, 40) for size, _ in got)
