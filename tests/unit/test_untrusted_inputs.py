"""Manifests, run ids and model names read from data are checked in-process before use: a malicious
name never reaches a shell or leaves the dataset (docs/fault_tolerance.md, "Trusted and untrusted inputs").
The same refusals in real trainer, evaluate and export processes: tests/process/test_trust_boundary.py.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import webdataset as wds

from trainer.config import ModelConfig
from trainer.data import storage
from trainer.data.manifest import load_manifest
from trainer.errors import DataError
from trainer.model import build_model
from trainer.monitoring import run_info

from helpers.datasets import BAD_NAMES, ROOTS, poisoned_dataset


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
    with caplog.at_level(logging.WARNING, logger="trainer.monitoring.run_info"):
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
