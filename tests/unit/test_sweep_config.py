"""launch/sweep.yaml: every parameter is a config key that loads with a value the sweep can pick, and the
command, expanded as the W&B agent expands it and run by bash, starts torchrun on `-m trainer` with a config
that loads, a run.dir per agent run and the sweep's key=value pairs on top. Also: a new run takes the agent's
WANDB_RUN_ID as its W&B run id.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from trainer import config
from trainer.monitoring import run_info

from helpers.common import ROOT

SWEEP = yaml.safe_load((ROOT / "launch" / "sweep.yaml").read_text())


def picks(spec: dict) -> list:
    """Values the sweep can choose for one parameter: the ends of a range, every listed value."""
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    return [spec["min"], spec["max"]]


def agent_argv(args: dict) -> list[str]:
    """The agent's expansion of `command` (wandb_agent.Agent._command_run): whole-token ${...} macros."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    sweep_vars = create_sweep_command_args({"args": {k: {"value": v} for k, v in args.items()}})
    out: list[str] = []
    for token in map(str, SWEEP["command"]):
        out += sweep_vars[token[2:-1]] if token.startswith("${") and token.endswith("}") else [token]
    return out


@pytest.mark.parametrize("name", sorted(SWEEP["parameters"]))
def test_every_parameter_is_a_config_key_that_loads(name: str):
    for value in picks(SWEEP["parameters"][name]):
        cfg = config.load(ROOT / "configs" / "alexnet_fast.yaml", [f"{name}={value}"])
        section, key = name.split(".")
        assert getattr(getattr(cfg, section), key) == value, name


def test_the_command_runs_torchrun_on_the_trainer_with_the_sweeps_pairs(tmp_path: Path):
    assert "torchrun" in " ".join(map(str, SWEEP["command"])) and SWEEP["command"][-1] == "${args_no_hyphens}"
    fake = tmp_path / "torchrun"  # prints its argv instead of starting processes
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    args = {name: picks(spec)[0] for name, spec in SWEEP["parameters"].items()}
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "WANDB_SWEEP_ID": "abc123",
           "WANDB_RUN_ID": "r7x9", "SWEEP_NPROC": "2"}
    argv = subprocess.run(agent_argv(args), env=env, cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.splitlines()
    assert argv[:4] == ["--standalone", "--nproc_per_node=2", "-m", "trainer"], argv
    assert argv[4] == "--config"
    overrides = argv[6:]
    cfg = config.load(ROOT / argv[5], overrides)
    assert cfg.run.dir == "runs/sweeps/abc123/r7x9" and cfg.wandb.mode == "online"
    assert cfg.wandb.group == "sweep-abc123"
    assert [o for o in overrides if o.split("=")[0] in args] == [f"{k}={v}" for k, v in args.items()], \
        shlex.join(overrides)


def test_a_new_run_takes_the_agents_run_id(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_RUN_ID", "r7x9")
    assert run_info.resolve_run_id(tmp_path / "a", None) == "r7x9"
    assert run_info.resolve_run_id(tmp_path / "a", None) == "r7x9"  # and keeps it
    assert run_info.resolve_run_id(tmp_path / "b", "1a2b") == "1a2b"  # a checkpoint's id still wins
    monkeypatch.setenv("WANDB_RUN_ID", "Not/An-Id")
    assert run_info.resolve_run_id(tmp_path / "c", None) != "Not/An-Id"
