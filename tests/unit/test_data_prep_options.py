"""data_prep refuses bad options before any work: exit 2, naming the option, nothing written, and
the corrected command then succeeds on the same --out."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys

import pytest

import data_prep
from data_prep.__main__ import main

from helpers.fixtures_imagenet import image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(data_prep.__file__)))
RUN = ["--shard-size", "4", "--workers", "1", "--no-progress"]


def _files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _run(args: list[str]) -> tuple[int, str]:
    """Exit status and stderr of the CLI in this process (argparse errors raise SystemExit)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(args)
        except SystemExit as e:
            rc = e.code
    return rc, err.getvalue()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("opts")
    image_folder(str(root / "train"), classes=2, per_class=3)
    return root


@pytest.mark.parametrize("bad, message", [
    (["--quality", "500"], "argument --quality: must be an integer from 1 to 100, got 500"),
    (["--quality", "0"], "argument --quality: must be an integer from 1 to 100, got 0"),
    (["--max-short-side", "-64"], "argument --max-short-side: must be an integer at least 1, got -64"),
    (["--prefix", "../x"], "argument --prefix: '../x' is not a plain name"),
    (["--prefix", "a/b"], "argument --prefix: 'a/b' is not a plain name"),
    (["--shard-size", "0"], "argument --shard-size: must be an integer at least 1, got 0"),
    (["--workers", "-1"], "argument --workers: must be an integer at least 1, got -1"),
    (["--max-pixels", "0"], "argument --max-pixels: must be an integer at least 1, got 0"),
    (["--num-parts", "0"], "argument --num-parts: must be an integer at least 1, got 0"),
    (["--num-parts", "2", "--part", "2"], "--part 2 must be below --num-parts 2"),
    (["--part", "-1"], "argument --part: must be an integer at least 0, got -1"),
])
def test_bad_option_refused_before_any_work(source, tmp_path, bad, message):
    out = tmp_path / "out"
    args = ["folder", "--train", str(source / "train"), "--out", str(out)] + RUN
    rc, err = _run(args + bad)
    assert rc == 2 and message in err, err
    assert not out.exists() and not os.path.exists(tmp_path / "x")
    assert _run(args) == (0, "")                     # the corrected command, same --out


@pytest.mark.parametrize("where", ["train", "val"])
def test_out_inside_a_source_folder_is_refused(tmp_path, where):
    image_folder(str(tmp_path / "train"), classes=2, per_class=3)
    image_folder(str(tmp_path / "val"), classes=2, per_class=1, prefix="v")
    before = _files(tmp_path)
    args = ["folder", "--train", str(tmp_path / "train"), "--val", str(tmp_path / "val")] + RUN
    inside = tmp_path / where / "shards"
    rc, err = _run(args + ["--out", str(inside)])
    assert rc == 2 and f"--out {inside} is inside --{where} {tmp_path / where}" in err, err
    assert _files(tmp_path) == before                 # nothing written among the sources
    assert _run(args + ["--out", str(tmp_path / "out")]) == (0, "")


def test_source_inside_the_folders_out_writes_is_refused(tmp_path):
    out = tmp_path / "data"
    image_folder(str(out / "train"), classes=2, per_class=3)
    before = _files(out)
    rc, err = _run(["folder", "--train", str(out / "train"), "--out", str(out)] + RUN)
    assert rc == 2 and f"--train {out / 'train'} is inside {out / 'train'}, where data_prep writes" in err
    assert _files(out) == before                       # no shards among the images, no plan, no lock


def test_cli_process_refuses_quality_500_with_status_2(source, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "data_prep", "imagenet", "--train", str(source / "train"),
                           "--out", str(out), "--quality", "500"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 2 and "argument --quality: must be an integer from 1 to 100" in proc.stderr
    assert not out.exists()
