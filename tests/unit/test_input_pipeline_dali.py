"""The DALI index files data_prep writes (one per shard, listed in `_info.json`): byte-identical to DALI's own
`wds2idx`, read by DALI's CPU pipeline (`readers.webdataset`, no GPU needed) with the labels, images and
counts of our reader, and checked by `data_prep verify`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep.__main__ import main
from trainer.data.loader import _read
from trainer.data.manifest import load_manifest

from helpers.common import SHARD_SIZE, run_module

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="NVIDIA DALI ships Linux wheels only")


def split_info(root: Path, split: str) -> dict:
    return json.loads((root / "_info.json").read_text())["splits"][split]


def test_index_files_are_listed_and_match_dalis_wds2idx(shards: Path, tmp_path: Path):
    from wds2idx import IndexCreator  # installed with nvidia-dali

    for split in ("train", "val"):
        info = split_info(shards, split)
        assert info["index_filenames"] == [f.replace(".tar", ".idx") for f in info["filenames"]]
        for shard, index in zip(info["filenames"], info["index_filenames"]):
            theirs = tmp_path / "theirs.idx"
            with IndexCreator(str(shards / shard), str(theirs), verbose=False) as creator:
                creator.create_index()
            assert (shards / index).read_text() == theirs.read_text()


def test_dalis_cpu_pipeline_reads_the_shards_with_their_index_files(shards: Path):
    from nvidia.dali import fn, pipeline_def

    info = split_info(shards, "train")
    paths = [str(shards / f) for f in info["filenames"]]
    index_paths = [str(shards / f) for f in info["index_filenames"]]

    @pipeline_def(batch_size=4, num_threads=1, device_id=None, seed=0)
    def read():
        jpg, cls = fn.readers.webdataset(paths=paths, index_paths=index_paths, ext=["jpg", "cls"],
                                         missing_component_behavior="error", name="reader")
        return jpg, cls

    pipe = read()
    pipe.build()
    assert pipe.epoch_size("reader") == info["num_samples"] == 48
    got = []
    for _ in range(info["num_samples"] // 4):
        jpgs, labels = pipe.run()
        got += [(bytes(np.asarray(jpgs[i])), int(bytes(np.asarray(labels[i])))) for i in range(len(jpgs))]
    split = load_manifest(str(shards)).train
    want = [(s.data, s.label) for s in _read(split, list(range(len(split.urls))), 4)]
    assert got == want  # every sample once, in shard order, labels and JPEG bytes as our reader reads them


def test_verify_checks_the_index_files(shards: Path, tmp_path: Path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(shards, root)
    assert main(["verify", str(root), "--workers", "1"]) == 0
    index = root / split_info(root, "val")["index_filenames"][1]
    index.chmod(0o644)
    index.write_text(index.read_text().replace(" 512 ", " 1024 ", 1))
    assert main(["verify", str(root), "--workers", "1"]) == 1
    assert f"{index.relative_to(root)}: the DALI index does not match" in capsys.readouterr().out


def test_a_rerun_writes_the_index_files_a_kept_shard_lacks(synthetic_images: Path, shards: Path, tmp_path: Path):
    """Shards prepared before data_prep wrote index files are kept by a rerun, which adds their indexes."""
    root = tmp_path / "data"
    shutil.copytree(shards, root)
    index = root / split_info(root, "train")["index_filenames"][2]
    want = index.read_text()
    index.unlink()
    run_module("data_prep", "folder", "--train", str(synthetic_images / "train"), "--val",
               str(synthetic_images / "val"), "--out", str(root), "--shard-size", str(SHARD_SIZE))
    assert index.read_text() == want
