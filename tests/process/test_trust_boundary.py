"""Checkpoints, manifests and run directories are data, not code: nothing read from them reaches a shell,
opens a URL, or names a file outside the dataset (docs/fault_tolerance.md, "Trusted and untrusted inputs").

Real `python -m trainer.export / trainer.evaluate / trainer` processes on a real checkpoint and real
shards. Every malicious input would create a marker file if it ran; the marker must stay absent and the
refusal must name what was refused. Every subprocess runs under a timeout.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import webdataset as wds

from trainer.config import ModelConfig
from trainer.data import storage
from trainer.data.manifest import load_manifest
from trainer.errors import DataError
from trainer.model import build_model
from trainer.monitoring import run_info

from helpers.common import ROOT, run_module
from helpers.resilience_procs import MODEL

TIMEOUT = 240  # seconds, per process; the slowest (export) takes ~15 s on an idle CPU


def run(*args: str) -> subprocess.CompletedProcess:
    """`python -m ...` as a user runs it, whatever its exit status (the tests check it)."""
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def train_args(root: str, run_dir: Path) -> list[str]:
    return ["trainer", "--config", str(ROOT / "configs" / "smoke_cpu.yaml"), f"data.root={root}",
            f"run.dir={run_dir}", "train.batch_size=8", "data.workers=0", "data.shuffle_buffer=16",
            "train.max_steps=2", "wandb.mode=disabled", *MODEL]


@pytest.fixture(scope="module")
def trained(shards: Path, tmp_path_factory) -> Path:
    """A real checkpoint of two training steps on the small model."""
    run_dir = tmp_path_factory.mktemp("trust") / "run"
    run_module(*train_args(str(shards), run_dir), timeout=TIMEOUT)
    return sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]


@pytest.fixture
def poisoned(trained: Path, shards: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The checkpoint, its stored data.root replaced by a command that touches a marker (then works)."""
    marker = tmp_path / "MARKER"
    state = torch.load(trained, map_location="cpu", weights_only=True)
    state["config"]["data"]["root"] = f"pipe:touch {marker}; cat {shards}"
    path = tmp_path / "sent-to-me.pt"
    torch.save(state, path)  # plain strings pass torch.load(weights_only=True)
    return path, marker


@pytest.mark.slow
def test_export_never_runs_the_checkpoints_pipe_root(poisoned, shards: Path, tmp_path: Path):
    ckpt, marker = poisoned
    out = tmp_path / "export" / "model.pt"
    proc = run("trainer.export", "--checkpoint", str(ckpt), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    assert json.loads(out.with_suffix(".json").read_text())["class_names"] is None
    assert "not a plain local path" in proc.stderr and "--data-root" in proc.stderr
    # The command line is trusted: the same kind of root given there is read.
    proc = run("trainer.export", "--checkpoint", str(ckpt), "--out", str(out), "--data-root", f"pipe:cat {shards}")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    want = list(load_manifest(str(shards)).class_names)
    assert json.loads(out.with_suffix(".json").read_text())["class_names"] == want


@pytest.mark.slow
def test_evaluate_refuses_the_checkpoints_pipe_root_and_takes_one_from_the_command_line(poisoned, shards: Path):
    ckpt, marker = poisoned
    proc = run("trainer.evaluate", "--checkpoint", str(ckpt))
    assert proc.returncode == 2, proc.stderr
    assert not marker.exists()
    assert "untrusted" in proc.stderr and "data.root=" in proc.stderr and "pipe:touch" in proc.stderr
    # A normal pipe: root from the command line still reads every validation sample (names shell-quoted).
    proc = run("trainer.evaluate", "--checkpoint", str(ckpt), f"data.root=pipe:cat {shards}", "data.workers=0")
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    assert json.loads(proc.stdout.strip().splitlines()[-1])["val/count"] == 12


BAD_NAMES = ["train/$(touch {marker}).tar", "x.tar; touch {marker}", "`touch {marker}`", "-o{marker}",
             "../../etc/passwd", "/etc/passwd", "train/../../x.tar"]
ROOTS = ["{root}", "pipe:cat {root}", "pipe:cat {root}/{{name}}"]


def poisoned_dataset(shards: Path, tmp_path: Path, bad: str) -> tuple[Path, Path, str]:
    """A copy of the shards whose _info.json names a malicious file as the second train shard."""
    ds, marker = tmp_path / "dataset", tmp_path / "MARKER"
    shutil.copytree(shards, ds)
    info = json.loads((ds / "_info.json").read_text())
    name = bad.format(marker=marker)
    info["splits"]["train"]["filenames"][1] = name
    (ds / "_info.json").write_text(json.dumps(info))
    return ds, marker, name


@pytest.mark.parametrize("root_form", ROOTS, ids=["plain", "pipe-prefix", "pipe-template"])
@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_manifest_file_name_never_reaches_a_shell_or_leaves_the_dataset(shards, tmp_path, bad, root_form):
    ds, marker, name = poisoned_dataset(shards, tmp_path, bad)
    with pytest.raises(DataError) as e:
        manifest = load_manifest(root_form.format(root=ds))
        for url in manifest.train.urls:  # what every rank does next
            list(wds.tarfile_to_samples(handler=wds.reraise_exception)(iter([{"url": url}])))
    assert not marker.exists()
    message = str(e.value)
    assert "_info.json" in message and f"splits.train.filenames[1] = {name!r}" in message
    assert "python -m data_prep verify" in message


@pytest.mark.slow
@pytest.mark.parametrize("root_form, bad", [("pipe:cat {root}", "train/$(touch {marker}).tar"),
                                            ("{root}", "../../etc/passwd")], ids=["pipe", "plain"])
def test_training_on_a_poisoned_manifest_stops_before_reading_it(shards, tmp_path, root_form, bad):
    ds, marker, name = poisoned_dataset(shards, tmp_path, bad)
    proc = run(*train_args(root_form.format(root=ds), tmp_path / "run"))
    assert proc.returncode != 0
    assert not marker.exists()
    assert "_info.json" in proc.stderr and repr(name) in proc.stderr and "data_prep verify" in proc.stderr


@pytest.mark.parametrize("edit, says", [
    (lambda s: s["shard_lengths"].append(8), "must be lists of the same length"),
    (lambda s: s["shard_lengths"].__setitem__(0, -1), "shard_lengths[0] = -1 is not a sample count"),
    (lambda s: s.pop("filenames"), "not a dataset manifest in the expected schema"),
], ids=["lengths-count", "negative-length", "no-filenames"])
def test_manifest_lengths_and_schema_are_checked(shards, tmp_path, edit, says):
    ds = tmp_path / "dataset"
    shutil.copytree(shards, ds)
    info = json.loads((ds / "_info.json").read_text())
    edit(info["splits"]["train"])
    (ds / "_info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="_info.json") as e:
        load_manifest(str(ds))
    assert says in str(e.value)


def test_join_takes_only_plain_names_and_only_scheme_free_roots_are_local():
    with pytest.raises(ValueError):
        storage.join("pipe:cat /data", "a.tar; touch x")
    with pytest.raises(ValueError):
        storage.join("/data", "../etc/passwd")
    assert storage.join("pipe:cat /data/{name} -", "train/a-000000.tar") == "pipe:cat /data/train/a-000000.tar -"
    # gopen treats "http:host/x" as a URL (curl), so it is not a local path even without "//".
    assert not storage.is_local("http:example.com/x") and not storage.is_local("pipe:cat /data")


def test_a_run_id_from_a_checkpoint_or_the_run_dir_is_checked(tmp_path: Path, caplog):
    id_file = tmp_path / run_info.RUN_ID_FILE
    with caplog.at_level(logging.WARNING, logger="trainer.monitoring.loggers"):
        for bad in ("../../escape", "ABC", "", 12345):
            run_id = run_info.resolve_run_id(tmp_path, bad)
            assert re.fullmatch("[a-z0-9]+", run_id) and run_id != bad
        id_file.write_text("../elsewhere\n")
        run_id = run_info.resolve_run_id(tmp_path, None)
    assert re.fullmatch("[a-z0-9]+", run_id) and id_file.read_text().strip() == run_id
    assert "../../escape" in caplog.text and "../elsewhere" in caplog.text
    assert run_info.resolve_run_id(tmp_path, "1a2b3c4d") == "1a2b3c4d"


def test_a_checkpoints_model_name_only_picks_a_torchvision_classifier():
    # model.name comes from the checkpoint in evaluate/export; it looks names up in torchvision's
    # registry of classification models and never imports a module by name.
    for name in ("torchvision:os.system", "torchvision:../x", "os:system"):
        with pytest.raises(ValueError, match="model.name"):
            build_model(ModelConfig(name=name), 4)
