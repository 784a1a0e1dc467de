"""Who may run, and for how long: one writer per run.dir, ranks that outlive their launcher, and values
that passed the config's checks but used to fail at the first step. Real processes, outer deadlines.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.common import ROOT
from helpers.resilience_procs import ENV, Run, checkpoint_steps, past_step, torchrun, trainer_args

pytestmark = pytest.mark.timeout(300)


def trainer(shards: Path, run_dir: Path, *overrides: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *trainer_args(shards, run_dir, *overrides)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def test_a_second_trainer_on_a_run_dir_is_refused_naming_the_holder(shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    first = Run(torchrun(shards, run_dir, "train.epochs=500"), tmp_path / "first.log")
    first.wait_until("step 1", past_step(run_dir, 1))
    holder = first.rank_pids()[0]
    second = trainer(shards, run_dir, "data.workers=0")
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"run.dir={run_dir} is in use by pid {holder} on host" in second.stderr
    assert "resumed from" not in second.stderr  # refused before touching the checkpoints
    # The holder is unaffected; once it is gone (even by SIGKILL) the run.dir is free again.
    first.kill()
    again = trainer(shards, run_dir, "data.workers=0", "train.max_steps=1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"resumed from \S+/step-\d+\.pt", again.stderr)


def test_ranks_exit_within_seconds_when_their_launcher_is_killed(shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    run = Run(torchrun(shards, run_dir, "train.epochs=20"), tmp_path / "run.log")
    run.wait_until("step 2", past_step(run_dir, 2))
    ranks = run.rank_pids()
    assert len(ranks) == 2
    os.kill(run.proc.pid, signal.SIGKILL)  # the OOM killer, or a scheduler killing only the agent
    killed = time.monotonic()
    run.proc.wait(timeout=10)
    left = run.all_gone(15)
    waited = time.monotonic() - killed
    assert not left, f"ranks and workers still running 15 s after the launcher died: {left}"
    assert waited < 15
    log = run.text()
    assert len(re.findall(r"rank \d: the launcher \(torchrun, pid \d+\) is gone; exiting now", log)) == 2, log[-3000:]
    before = checkpoint_steps(run_dir)
    time.sleep(1)
    assert checkpoint_steps(run_dir) == before  # nobody writes into run.dir any more


@pytest.mark.parametrize("overrides, named", [
    (["model.num_classes=2"], "has class index [23], outside 0..1"),  # labels 0..3 in the fixture
    (["model.name=alexnet", "data.image_size=32"], "data.image_size=32 does not fit model.name=alexnet"),
    (["model.name=alexnet", "data.image_size=224", "data.eval_image_size=176", "data.eval_resize=0"],
     "data.eval_image_size=176 does not fit model.name=alexnet"),  # FixRes beyond the seed classifier's range
    (["model.name=torchvision:no_such_net"], "model.name=torchvision:no_such_net: torchvision has no"),
])
def test_values_that_fail_at_the_first_step_are_clear_errors(shards: Path, tmp_path: Path, overrides: list[str],
                                                            named: str):
    proc = trainer(shards, tmp_path / "run", "data.workers=2", *overrides)  # later overrides win
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert re.search(named, proc.stderr), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("override, named", [
    ("device=cuda", "device=cuda but CUDA is not available"),
    ("run.dir=", "run.dir is empty"),
    ("data.shuffle_buffer=0", "data.shuffle_buffer must be > 0"),
    ("model.name=resnet", "model.name='resnet' is unknown"),
    ("mix.prob=0.5", "mix.prob, mix.switch_prob and mix.off_epoch need mix.mixup_alpha > 0"),
    ("optim.trust_coeff=0.01", "optim.lars_clip and optim.trust_coeff apply only to optim.name=lars"),
    ("run.profile_steps=10-5", "run.profile_steps='10-5' must be \"FIRST-END\""),
])
def test_config_values_are_refused_with_status_2(shards: Path, tmp_path: Path, override: str, named: str):
    env = {**ENV, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine that has one
    proc = subprocess.run([sys.executable, *trainer_args(shards, tmp_path / "run", override)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 2 and named in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  epochs: [1\n")
    proc = subprocess.run([sys.executable, "-m", "trainer", "--config", str(recipe)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"config file {recipe} is not valid YAML" in proc.stderr, proc.stderr
    assert "line 3" in proc.stderr
