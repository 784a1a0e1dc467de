"""The fault matrix: errors nobody planned for, on one process and on two torchrun ranks (gloo).

Each case resumes a run directory that holds a checkpoint at step 2 (made once per world size) under
one injected fault, and checks that the run ends with the documented exit status (trainer/resilience/lifecycle.py),
that the error names its cause (shard and key, file, option), that every process it started (launcher,
ranks, DataLoader workers) is gone within seconds, and that the newest checkpoint is still loadable.
Every run is under an outer deadline, so a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.datasets import copy_dataset
from helpers.resilience_procs import Run, checkpoint_steps, load, past_step, torchrun, trainer_args

pytestmark = pytest.mark.timeout(300)

BASE_STEP = 2
DEADLINE_S = 60  # start-up, resume and the fault; a hang runs into it
GONE_S = 10  # after the launcher exits, every process it started must be gone within this


def command(world: int, shards: Path, run_dir: Path, *overrides: str) -> list[str]:
    if world == 1:
        return [sys.executable, *trainer_args(shards, run_dir, *overrides)]
    return torchrun(shards, run_dir, *overrides, nproc=world)


@pytest.fixture(scope="module", params=[1, 2], ids=["1-process", "2-ranks"])
def base(request, shards: Path, tmp_path_factory) -> tuple[int, Path]:
    """(world size, a run directory whose newest checkpoint is step 2 of epoch 0)."""
    world = request.param
    run_dir = tmp_path_factory.mktemp(f"base-{world}") / "run"
    run = Run(command(world, shards, run_dir, f"train.max_steps={BASE_STEP}"), run_dir.parent / "base.log")
    assert run.finish() == 0, run.text()[-3000:]
    assert checkpoint_steps(run_dir) == [BASE_STEP]
    return world, run_dir


def rank_statuses(log: str) -> dict[int, int]:
    """{rank: exit status} from torchrun's failure summary."""
    return {int(r): int(s) for r, s in re.findall(r"rank\s*: (\d+) .*\n\s*exitcode\s*: (-?\d+)", log)}


def run_fault(world: int, base_dir: Path, tmp_path: Path, data_root: Path, *overrides: str,
              act: Callable[[Run, Path], None] | None = None, preexec_fn=None) -> tuple[Run, Path, int]:
    """Resume a copy of `base_dir` on `data_root`; returns the run, its directory and the launcher's status
    once every process it started is gone (asserted)."""
    run_dir = tmp_path / "run"
    if not run_dir.exists():
        shutil.copytree(base_dir, run_dir, ignore=shutil.ignore_patterns("best.pt", ".lock"))
    run = Run(command(world, data_root, run_dir, *overrides), tmp_path / "run.log", preexec_fn=preexec_fn)
    if act:
        act(run, run_dir)
    status = run.finish(timeout=DEADLINE_S)
    left = run.all_gone(GONE_S)
    assert not left, f"processes still running {GONE_S} s after the launcher exited: {left}\n{run.text()[-3000:]}"
    return run, run_dir, status


def assert_status(world: int, status: int, log: str, expected: int) -> None:
    """One process exits with `expected`; under torchrun a rank does, the others with it or EXIT_PEER_FAILED."""
    if world == 1:
        assert status == expected, log[-3000:]
        return
    ranks = rank_statuses(log)
    assert status == 1 and expected in ranks.values() and set(ranks.values()) <= {expected, 4}, (ranks, log[-3000:])


def assert_newest_checkpoint(run_dir: Path, step: int) -> None:
    ckpt = run_dir / "checkpoints"
    assert checkpoint_steps(run_dir) == [step] and not list(ckpt.glob("*.tmp")), sorted(os.listdir(ckpt))
    assert load(ckpt / f"step-{step:09d}.pt")["step"] == step


@pytest.fixture(scope="module")
def truncated_jpegs(shards: Path, tmp_path_factory) -> Path:
    """Every other training JPEG cut in half, as an interrupted copy leaves it."""
    out = tmp_path_factory.mktemp("truncated") / "data"

    def cut(key: str, ext: str, data: bytes) -> bytes:
        return data[: len(data) // 2] if ext == "jpg" and int(key.rsplit("_", 1)[1]) % 2 else data

    copy_dataset(shards, out, cut)
    return out


# ---- defect 1 (and 10): every error ends every process within seconds, with its status -------------


def test_undecodable_samples_past_the_limit_stop_every_process(base, truncated_jpegs: Path, tmp_path: Path):
    world, base_dir = base
    run, run_dir, status = run_fault(world, base_dir, tmp_path, truncated_jpegs, "data.max_bad_samples=0")
    log = run.text()
    assert_status(world, status, log, 2)
    # The workers name shard and key; the rank names the limit.
    named = re.findall(r"skipping sample (n\d+_\d+) of shard (\S+): it cannot be decoded", log)
    assert named and all(f"{truncated_jpegs}/train/" in shard for _, shard in named), log[-3000:]
    assert "more than data.max_bad_samples=0" in log
    assert_newest_checkpoint(run_dir, BASE_STEP)


def test_a_label_out_of_range_names_shard_and_key(base, shards: Path, tmp_path_factory, tmp_path: Path):
    world, base_dir = base
    data = tmp_path_factory.mktemp("labels") / "data"
    copy_dataset(shards, data, lambda key, ext, b: b"-100" if ext == "cls" else b)  # the loss's ignore_index
    run, run_dir, status = run_fault(world, base_dir, tmp_path, data)
    log = run.text()
    assert_status(world, status, log, 2)
    assert re.search(rf"sample n\d+_\d+ of shard {data}/train/imagenet-train-\d+\.tar has class index -100, "
                     r"outside 0\.\.3", log), log[-3000:]
    assert_newest_checkpoint(run_dir, BASE_STEP)


def test_a_missing_shard_names_the_file(base, shards: Path, tmp_path_factory, tmp_path: Path):
    world, base_dir = base
    data = tmp_path_factory.mktemp("missing") / "data"
    shutil.copytree(shards, data)
    gone = data / "train" / "imagenet-train-000003.tar"
    gone.unlink()
    run, run_dir, status = run_fault(world, base_dir, tmp_path, data)
    log = run.text()
    assert_status(world, status, log, 2)
    assert f"cannot read shard {gone}" in log, log[-3000:]
    assert_newest_checkpoint(run_dir, BASE_STEP)


def test_ctrl_c_saves_and_stops(base, shards: Path, tmp_path: Path):
    """Ctrl-C in a terminal signals the foreground process group: the trainer and its workers, or torchrun."""
    world, base_dir = base

    def interrupt(run: Run, run_dir: Path) -> None:
        run.wait_until("step 3", past_step(run_dir, BASE_STEP + 1))
        os.killpg(run.proc.pid, signal.SIGINT)

    run, run_dir, status = run_fault(world, base_dir, tmp_path, shards, "train.epochs=3", act=interrupt)
    log = run.text()
    stops = re.findall(r"rank (\d): stopped by a signal at step (\d+)", log)
    assert len(stops) == world and len({s for _, s in stops}) == 1, log[-3000:]
    step = int(stops[0][1])
    if world == 1:
        assert status == 75
    assert step > BASE_STEP and checkpoint_steps(run_dir)[-1] == step
    assert load(run_dir / "checkpoints" / f"step-{step:09d}.pt")["step"] == step


@contextlib.contextmanager
def small_disk(path: Path, size: int, file_limit: int) -> Iterator[Callable[[], None] | None]:
    """A tmpfs of `size` bytes mounted at `path`, so writes past it fail with ENOSPC as on a full disk. Where
    mounting is not allowed, yields a preexec_fn capping the size of any file the run writes at
    `file_limit` bytes instead (RLIMIT_FSIZE; Python ignores SIGXFSZ, so the write fails with EFBIG)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size // 1024}k", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        if mounted:
            yield None
        else:
            yield lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_full_disk_at_a_mid_epoch_save_keeps_the_previous_checkpoint(base, shards: Path, tmp_path: Path):
    world, base_dir = base
    used = sum(f.stat().st_size for f in base_dir.rglob("*") if f.is_file() and f.name != "best.pt")
    checkpoint = (base_dir / "checkpoints" / f"step-{BASE_STEP:09d}.pt").stat().st_size
    # Room for what the run holds and half a checkpoint more, not for another checkpoint.
    with small_disk(tmp_path / "disk", used + 64 * 1024 + checkpoint // 2, checkpoint // 2) as preexec_fn:
        run_dir = tmp_path / "disk" / "run"
        shutil.copytree(base_dir, run_dir, ignore=shutil.ignore_patterns("best.pt", ".lock"))
        os.symlink(run_dir, tmp_path / "run")
        run, _, status = run_fault(world, base_dir, tmp_path, shards, "checkpoint.every_steps=1",
                                   preexec_fn=preexec_fn)
        log = run.text()
        assert_status(world, status, log, 5)
        assert f"could not write checkpoint {tmp_path / 'run'}/checkpoints/step-000000003.pt (" in log, log[-3000:]
        assert "nothing was saved over the existing ones, the newest of which is" in log
        assert_newest_checkpoint(run_dir, BASE_STEP)
