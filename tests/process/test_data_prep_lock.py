"""One writer per --out, with real processes: a second `folder`/`imagenet`/`merge` run on a folder
being written refuses (exit 2, naming the holder's pid); parts of one multi-machine run may share
--out; the lock dies with its holder (SIGKILL) and its `.lock` file upsets neither resume, merge
nor verify. Every process runs under a timeout, so a hang fails the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import data_prep

from helpers.fixtures_imagenet import image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(data_prep.__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
DELAY = "DATA_PREP_TEST_SHARD_DELAY"


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep", *args], env=ENV, capture_output=True,
                          text=True, timeout=120, **kw)


def _slow_writer(args: list[str], out: str) -> subprocess.Popen:
    """Start a writer that sleeps after each shard; return once it has written its first shard."""
    proc = subprocess.Popen([sys.executable, "-m", "data_prep", *args], env=dict(ENV, **{DELAY: "5"}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = os.path.join(out, "_prep", "done")
    deadline = time.time() + 90
    while not (os.path.isdir(done) and os.listdir(done)):
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "the slow writer wrote no shard in 90 s"
        time.sleep(0.05)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def train(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("lock")
    image_folder(str(root / "train"), classes=3, per_class=10)
    return str(root / "train")


def test_second_writer_and_merge_refused_while_first_runs(train, tmp_path):
    out = str(tmp_path / "out")
    args = ["folder", "--train", train, "--out", out, "--shard-size", "2", "--workers", "1", "--no-progress"]
    first = _slow_writer(args, out)       # 15 shards at >= 5 s each
    try:
        second = _cli(*args)
        merge = _cli("merge", out)
        alive = first.poll() is None
    finally:
        _kill(first)                      # its lock must go with it
    for proc in (second, merge):
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"--out={out} is in use by pid {first.pid} on host" in proc.stderr
        assert "folder --train" in proc.stderr          # the holder's command
    assert alive, "the first writer ended before the checks: the test proved nothing"
    rerun = _cli(*args)                   # resume past the killed holder's lock
    assert rerun.returncode == 0, rerun.stderr
    kept = int(rerun.stdout.split("written, ")[1].split(" kept")[0])
    assert kept >= 1 and os.path.exists(os.path.join(out, ".lock"))
    check = _cli("verify", out, "--workers", "1")
    assert check.returncode == 0 and "OK: " in check.stdout and "30 samples verified" in check.stdout


def test_parts_share_out_but_a_whole_run_is_refused(train, tmp_path):
    out = str(tmp_path / "out")
    args = ["folder", "--train", train, "--out", out, "--shard-size", "2", "--workers", "1", "--no-progress"]
    part0 = _slow_writer(args + ["--num-parts", "2", "--part", "0"], out)
    try:
        part1 = _cli(*args, "--num-parts", "2", "--part", "1")
        whole = _cli(*args)
        alive = part0.poll() is None
    finally:
        _kill(part0)
    assert part1.returncode == 0, part1.stderr           # another part may share --out
    assert "other parts are unfinished" in part1.stdout
    assert whole.returncode == 2, whole.stdout + whole.stderr
    assert f"is in use by pid {part0.pid} on host" in whole.stderr
    assert alive, "part 0 ended before the checks: the test proved nothing"
    rerun = _cli(*args, "--num-parts", "2", "--part", "0")
    assert rerun.returncode == 0, rerun.stderr
    assert f"manifest: {out}/_info.json" in rerun.stdout    # the last part writes it
    os.remove(os.path.join(out, "_info.json"))
    merged = _cli("merge", out)
    assert merged.returncode == 0, merged.stderr
    check = _cli("verify", out, "--workers", "1")
    assert check.returncode == 0 and "30 samples verified" in check.stdout
