"""Monitoring end to end: real one-process training runs, their offline W&B files read back record by record.

Distribution is not the point here (tests/process/test_train.py covers torchrun), so each run is one
`python -m trainer` process with a small torchvision model on 64-pixel crops to stay fast.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from trainer.data.jpeg import REGION_DECODE
from trainer.start import STEP_DELAY_ENV

from helpers.common import CLASSES, ROOT, TRAIN_PER_CLASS, VAL_PER_CLASS
from helpers.wandb_records import read_records

BATCH = 8
STEPS = CLASSES * TRAIN_PER_CLASS // BATCH  # 6 steps in the one epoch
TRAIN_KEYS = {"train/loss", "train/lr", "train/epoch", "perf/images_per_s", "perf/step_time_s",
              "perf/data_wait_fraction"}
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connection refused at once


def trainer(shards: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "trainer", "--config", str(ROOT / "configs" / "smoke_cpu.yaml"),
        f"data.root={shards}", f"run.dir={run_dir}", f"train.batch_size={BATCH}", "train.epochs=1",
        "data.workers=1", "data.shuffle_buffer=16", "model.name=tiny_cnn",
        "data.image_size=64", "data.eval_resize=72", *overrides,
    ]


def wandb_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This machine's W&B settings left out; W&B's caches and staging inside the test's directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(OMP_NUM_THREADS="1", WANDB_SILENT="true", WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
               WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"))
    env.update(extra)
    return env


def run(cmd: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def offline_runs(run_dir: Path) -> list[Path]:
    """The offline run directories, oldest first (their names start with the start time)."""
    return sorted(run_dir.glob("wandb/offline-run-*"))


def records(run: Path, kind: str) -> list:
    (path,) = run.glob("run-*.wandb")
    return [getattr(r, kind) for r in read_records(path) if r.WhichOneof("record_type") == kind]


def rows(run: Path) -> list[dict]:
    return [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in h.item}
            for h in records(run, "history")]


def jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_offline_run_holds_metrics_config_samples_and_checkpoint_artifacts(shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    out = run(trainer(shards, run_dir, "wandb.log_checkpoints=true", "wandb.tags=a,b", "wandb.group=g",
                      "run.profile_steps=2-4"), wandb_env(tmp_path))
    (wb,) = offline_runs(run_dir)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert [r.run_id for r in records(wb, "run")] == [run_id] and wb.name.endswith(run_id)
    (run_record,) = records(wb, "run")
    assert (run_record.project, run_record.run_group, list(run_record.tags), run_record.display_name) == \
        ("imagenet-trainer-smoke", "g", ["a", "b"], "run")

    # Every training log row, at the steps metrics.jsonl has, with the same values.
    history = rows(wb)
    local = {r["step"]: r for r in jsonl(run_dir) if "train/loss" in r}
    train = [r for r in history if "train/loss" in r]
    assert [r["trainer/step"] for r in train] == [2, 4, 6] == sorted(local)
    for r in train:
        assert TRAIN_KEYS <= r.keys() and not any(k.startswith("gpu/") for k in r)  # CPU: no GPU memory
        assert {k: r[k] for k in TRAIN_KEYS} == {k: local[r["trainer/step"]][k] for k in TRAIN_KEYS}
        assert r["perf/images_per_s"] > 0 and 0 <= r["perf/data_wait_fraction"] <= 1
    (val,) = [r for r in history if "val/top1" in r]
    assert val["trainer/step"] == STEPS and val["val/count"] == CLASSES * VAL_PER_CLASS
    assert 0 <= val["val/top1"] <= val["val/top5"] <= 1 and val["val/loss"] > 0
    # The worst classes by top-1 as a W&B table: every class of the fixture (fewer than ten), lowest first.
    assert val["val/worst_classes/_type"] == "table-file" and val["val/worst_classes/nrows"] == CLASSES
    table = json.loads((wb / "files" / val["val/worst_classes/path"]).read_text())
    assert table["columns"] == ["class", "name", "top1", "count"] and len(table["data"]) == CLASSES
    assert [r[2] for r in table["data"]] == sorted(r[2] for r in table["data"])
    assert {r[3] for r in table["data"]} == {VAL_PER_CLASS} and "val/worst_classes" not in jsonl(run_dir)[-1]
    assert [r["_step"] for r in history] == list(range(len(history)))  # W&B's own axis: no gaps, no repeats
    assert (run_dir / "wandb_step").read_text().strip() == str(len(history))

    # The sample grid: the first batch (8 images of 64 px, shown at 128 px), with class names, at step 0.
    (grid,) = [r for r in history if "train/samples/_type" in r]
    assert grid["trainer/step"] == 0 and grid["train/samples/_type"] == "image-file"
    with Image.open(wb / "files" / grid["train/samples/path"]) as image:
        assert image.format == "PNG" and image.size == (grid["train/samples/width"], grid["train/samples/height"])
        assert image.size == (3 * 128, 3 * (128 + 14))  # 3x3 tiles for 8 images, a caption strip under each
    with Image.open(run_dir / "media" / "train_samples-000000000.png") as local_copy:
        assert local_copy.size == image.size

    # The resolved config, library versions and the code's commit.
    config = {u.key: json.loads(u.value_json) for u in run_record.config.update}
    assert config["data"]["image_size"] == 64 and config["model"]["name"] == "tiny_cnn"
    assert config["wandb"]["log_checkpoints"] is True
    env = config["env"]
    for package in ("torch", "torchvision", "webdataset", "wandb"):
        assert env[package] == importlib.metadata.version(package)
    assert env["python"] == ".".join(map(str, sys.version_info[:3])) and env["cuda"] is None
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert env["git_commit"] == (git.stdout.strip() if git.returncode == 0 else None)
    assert env["region_decode"] is REGION_DECODE  # which JPEG decoder the pixels came from

    # The epoch's checkpoint as one artifact version, tagged latest and best; the file W&B staged is the
    # checkpoint itself.
    (artifact,) = [a for a in records(wb, "artifact") if a.type == "model"]
    ckpt = run_dir / "checkpoints" / f"step-{STEPS:09d}.pt"
    assert (artifact.name, artifact.type) == (f"checkpoint-{run_id}", "model")
    assert set(artifact.aliases) == {"latest", "best", f"step-{STEPS}"}
    (content,) = artifact.manifest.contents
    assert (content.path, content.size) == (ckpt.name, ckpt.stat().st_size)
    assert [e.exit_code for e in records(wb, "exit")] == [0]

    # run.profile_steps=2-4: a Chrome trace of optimizer steps 2 and 3, each with its data wait and its
    # step as named ranges, in run.dir/profile/ and as a W&B artifact.
    (trace,) = (run_dir / "profile").glob("*.json")
    assert trace.name == "trace-rank0-steps2-4.json"
    names = [e.get("name") for e in json.loads(trace.read_text())["traceEvents"]]
    assert {"ProfilerStep#2", "ProfilerStep#3"} <= set(names) and "ProfilerStep#4" not in names
    assert names.count("data_wait") == 2 and names.count("step") == 2
    (profile,) = [a for a in records(wb, "artifact") if a.type == "profile"]
    assert profile.name == f"profile-{run_id}" and [c.path for c in profile.manifest.contents] == [trace.name]

    # Not a terminal: one plain line per log call, with progress and ETA; sync instructions at the end.
    assert re.search(r"^step +2/6 \(33\.3%\) eta \d+:\d\d:\d\d  train/loss=", out.stdout, re.M), out.stdout
    assert f"wandb sync {run_dir / 'wandb'}/offline-run-*-{run_id}" in out.stderr

    from trainer import plot  # in-process: the CLI's code path without another interpreter start

    assert plot.main([str(run_dir)]) == 0
    png = run_dir / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.size == (1200, 1200)  # six panels


def test_killed_run_resumes_the_same_wandb_run_with_an_unreachable_server(shards: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    cmd = trainer(shards, run_dir, "checkpoint.every_steps=3")
    slow = wandb_env(tmp_path, **{STEP_DELAY_ENV: "0.3"})  # time to kill it at step 4
    first = subprocess.Popen(cmd, cwd=ROOT, env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(r.get("step") == 4 for r in _rows_so_far(run_dir)):  # past the step-3 checkpoint
        assert first.poll() is None, f"the run ended early:\n{first.stderr.read()[-4000:]}"
        assert time.monotonic() < deadline, "no step-4 log within 120 s"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)  # no goodbye: W&B cannot finish, nothing is saved at step 4
    first.communicate(timeout=60)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    wandb_rows_before = int((run_dir / "wandb_step").read_text())

    # The same command, now online against a server that refuses connections: it must finish.
    resumed = run(cmd + ["wandb.mode=online", "wandb.init_timeout_s=3"],
                  wandb_env(tmp_path, WANDB_BASE_URL=UNREACHABLE, WANDB_API_KEY="x" * 40))
    assert "resumed from" in resumed.stderr and "step-000000003.pt" in resumed.stderr
    assert resumed.stderr.count("W&B could not start online") == 1, resumed.stderr
    assert f"wandb sync {run_dir / 'wandb'}/offline-run-*-{run_id}" in resumed.stderr

    # Both processes wrote the same W&B run (offline), the id also in the final checkpoint.
    import torch

    final = torch.load(run_dir / "checkpoints" / f"step-{STEPS:09d}.pt", weights_only=True)
    segments = offline_runs(run_dir)
    assert len(segments) == 2 and final["wandb_run_id"] == run_id
    assert all(seg.name.endswith(run_id) for seg in segments)
    assert [r.run_id for r in records(segments[1], "run")] == [run_id]

    # W&B's own step never goes backwards across the segments, even though the resume from the step-3
    # checkpoint logs trainer/step 4 again (drawn twice against trainer/step, dropped nowhere). The
    # killed segment lost its unwritten tail; the resumed one logged those rows again first (replay).
    history = [rows(seg) for seg in segments]
    steps = [r["_step"] for seg in history for r in seg]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert history[1][0]["_step"] == wandb_rows_before
    assert sorted(r["trainer/step"] for seg in history for r in seg if "train/loss" in r) == [2, 4, 4, 6]
    assert [r["trainer/step"] for r in history[1] if "train/samples/_type" in r] == [3]
    assert [r["step"] for r in jsonl(run_dir) if "train/loss" in r] == [2, 4, 4, 6]


def _rows_so_far(run_dir: Path) -> list[dict]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.endswith("}")]

