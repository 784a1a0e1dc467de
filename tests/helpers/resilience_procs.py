"""Real trainer processes for the resilience tests: launch torchrun, watch its progress, signal ranks.

Every wait has a deadline; on expiry the whole process group is killed and the test fails, so a hang
fails instead of blocking. Output goes to a file, which the tests read while the run goes on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from trainer.start import STEP_DELAY_ENV

from helpers.common import ROOT

MODEL = [  # a tiny net with batch norm and dropout (both must resume exactly), on 32 px crops
    "model.name=tiny_cnn", "data.image_size=32", "data.eval_resize=36",
]
# tiny_cnn trains a step in milliseconds: each step sleeps (CPU-idle) so a test can act at a chosen step.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", STEP_DELAY_ENV: "0.05"}


def trainer_args(shards: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [
        "-m", "trainer", "--config", str(ROOT / "configs" / "smoke_cpu.yaml"), f"data.root={shards}",
        f"run.dir={run_dir}", "train.batch_size=8", "data.workers=2", "data.shuffle_buffer=16",
        "train.epochs=2", "train.log_every=1", "wandb.mode=disabled", *MODEL, *overrides,
    ]


def torchrun(shards: Path, run_dir: Path, *overrides: str, nproc: int = 2,
             launcher: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            *launcher, *trainer_args(shards, run_dir, *overrides)]


class Run:
    """One launched command (its own process group), with its combined output in `log`.

    Every process it starts (torchrun, ranks, DataLoader workers) is recorded while it runs, so that a
    test can check that all of them are gone (`all_gone`), also those that lost their parent."""

    def __init__(self, cmd: list[str], log: Path, preexec_fn=None, **env: str) -> None:
        self.log = log
        self.out = open(log, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**ENV, **env}, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=preexec_fn)
        self.seen: set[int] = set()
        threading.Thread(target=self._record, daemon=True).start()

    def _record(self) -> None:
        while self.proc.poll() is None:
            self.seen |= descendants(self.proc.pid)
            time.sleep(0.05)

    def all_gone(self, timeout: float) -> list[int]:
        """Wait up to `timeout` s for every process this run started to end; those still running.

        Besides the processes seen below the launcher, any process in their process groups counts: a
        DataLoader worker forked and orphaned between two looks at /proc still has its rank's group."""
        deadline = time.monotonic() + timeout
        while True:
            groups = {self.proc.pid, *self.seen}
            self.seen |= {pid for pid, pgid in _process_groups().items() if pgid in groups}
            alive = [p for p in sorted(self.seen) if _state(p) != "Z"]
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for pid in alive:  # a failing test leaves nothing behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return alive

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(self, what: str, ready, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"run exited ({self.proc.returncode}) before {what}:\n{self.text()[-4000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no {what} within {timeout} s:\n{self.text()[-4000:]}")
            time.sleep(0.05)

    def finish(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"run did not end within {timeout} s:\n{self.text()[-4000:]}") from None
        finally:
            self.out.close()

    def kill(self) -> None:
        """SIGKILL torchrun, the ranks and their DataLoader workers at once (a node dying).

        torchrun starts each rank in a session of its own, so each rank's group is killed as well.
        """
        groups = [self.proc.pid, *self.rank_pids().values()]
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_state(pid) != "Z" for pid in groups[1:]):  # gone, or a zombie: not running
            assert time.monotonic() < deadline, "killed ranks are still running"
            time.sleep(0.05)

    def rank_pids(self) -> dict[int, int]:
        """{rank: pid} of the trainer processes torchrun started (read from /proc)."""
        pids = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                env = (entry / "environ").read_bytes().split(b"\0") if ppid == self.proc.pid else []
            except (OSError, IndexError, ValueError):
                continue
            for var in env:
                if var.startswith(b"RANK="):
                    pids[int(var[5:])] = int(entry.name)
        return pids


def descendants(pid: int) -> set[int]:
    """The PIDs of every process below `pid` (children, their children, ...), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _process_groups() -> dict[int, int]:
    """{pid: process group id} of every process, read from /proc."""
    groups = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                groups[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3])
            except (OSError, IndexError, ValueError):
                continue
    return groups


def _state(pid: int) -> str:
    """The process state letter from /proc ("Z" also for a process that no longer exists)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            continue
    return [r["step"] for r in rows if "train/loss" in r]


def past_step(run_dir: Path, step: int):
    return lambda: max(logged_steps(run_dir), default=0) >= step


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name[5:14]) for p in (run_dir / "checkpoints").glob("step-*.pt"))


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_bitwise_equal(a: dict, b: dict) -> None:
    """Every tensor of two final checkpoints' model state_dicts, optimizer state (momentum buffers) and EMA
    weights (train.ema_decay) is identical."""
    for key in ("model", "ema"):
        assert (a.get(key) is None) == (b.get(key) is None), f"only one checkpoint has {key!r}"
        if a.get(key) is None:
            continue
        assert a[key].keys() == b[key].keys()
        differ = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
        assert not differ, f"{len(differ)} of {len(a[key])} {key} tensors differ, e.g. {differ[:5]}"
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert state_a.keys() == state_b.keys() and state_a
    for i in state_a:
        assert state_a[i].keys() == state_b[i].keys()
        differ = [k for k, v in state_a[i].items()
                  if not torch.equal(torch.as_tensor(v), torch.as_tensor(state_b[i][k]))]
        assert not differ, f"optimizer state {differ} of parameter {i} differs"
