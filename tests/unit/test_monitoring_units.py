"""Monitoring pieces in-process: the W&B logger's fallbacks, the run id, progress on a real pty, the grid, plots."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import struct
import termios
from pathlib import Path

import pytest
import torch
from PIL import Image

from trainer import config, plot
from trainer.config import ConfigError, WandbConfig
from trainer.monitoring import meters, run_info
from trainer.monitoring.progress import ProgressLogger
from trainer.monitoring.sample_grid import LABEL_HEIGHT, sample_grid

from helpers.common import ROOT
from helpers.wandb_records import read_records


@pytest.fixture
def no_wandb_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key anywhere W&B looks (env, ~/.netrc, its settings), its caches inside tmp_path."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    for name in ("WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_failed_login_falls_back_offline_and_an_exception_marks_the_run_failed(
        tmp_path: Path, no_wandb_login: None, caplog: pytest.LogCaptureFixture):
    import wandb

    from trainer.monitoring.wandb_logger import WandbLogger

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    caplog.set_level(logging.INFO, logger="trainer")
    try:
        logger = WandbLogger(WandbConfig(mode="online", init_timeout_s=5), run_dir, "unit0001", {"a": 1})
        logger.log({"train/loss": 2.5}, step=10)
        with pytest.raises(RuntimeError):
            try:
                raise RuntimeError("the training step blew up")
            finally:
                logger.close()  # as the loop's `finally` does
    finally:
        wandb.teardown()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("W&B could not start online (UsageError" in w for w in warnings) == 1, warnings
    assert any(f"wandb sync {run_dir / 'wandb'}/offline-run-*-unit0001" in w for w in warnings)

    (path,) = run_dir.glob("wandb/offline-run-*-unit0001/run-unit0001.wandb")
    kinds = [(r.WhichOneof("record_type"), r) for r in read_records(path)]
    (history,) = [r.history for kind, r in kinds if kind == "history"]
    row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in history.item}
    assert (row["train/loss"], row["trainer/step"], row["_step"]) == (2.5, 10, 0)
    assert [r.exit.exit_code for kind, r in kinds if kind == "exit"] == [1]


def test_run_id_comes_from_the_checkpoint_then_the_run_directory_then_is_new(tmp_path: Path):
    fresh = run_info.resolve_run_id(tmp_path / "a", None)
    assert len(fresh) == 8 and (tmp_path / "a" / run_info.RUN_ID_FILE).read_text().strip() == fresh
    assert run_info.resolve_run_id(tmp_path / "a", None) == fresh  # killed before its first checkpoint
    assert run_info.resolve_run_id(tmp_path / "a", "fromckpt") == "fromckpt"
    assert (tmp_path / "a" / run_info.RUN_ID_FILE).read_text().strip() == "fromckpt"
    assert run_info.resolve_run_id(tmp_path / "b", None) != fresh


def test_progress_bar_on_a_terminal_shows_eta_images_per_second_and_loss():
    main, child = os.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    with os.fdopen(child, "w") as terminal:
        progress = ProgressLogger(end_step=100, start_step=20, stream=terminal)
        assert progress.bar is not None
        progress.log({"train/loss": 1.25, "train/lr": 0.01, "perf/images_per_s": 812.0}, 40)
        progress.log({"val/top1": 0.5}, 40)
        progress.close()
    shown = _drain(main).decode()
    assert "40/100" in shown and "loss=1.2500" in shown and "img/s=812" in shown and "lr=0.01" in shown
    assert "<" in shown  # tqdm's [elapsed<remaining] ETA
    assert "step       40/100 (40.0%)" in shown and "val/top1=0.5" in shown  # non-training rows as lines


def _drain(fd: int) -> bytes:
    """Everything written to a pty so far (a single read returns one chunk), then close it."""
    out = b""
    while select.select([fd], [], [], 0.5)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed and drained
            break
        if not chunk:
            break
        out += chunk
    os.close(fd)
    return out


def test_progress_lines_when_not_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture):
    main, child = os.openpty()  # a terminal of 0 rows (nobody sized it) cannot show a bar either
    with open(tmp_path / "log.txt", "w") as file, os.fdopen(child, "w") as unsized:
        for stream in (file, unsized):
            progress = ProgressLogger(end_step=10, start_step=0, stream=stream)
            assert progress.bar is None
            progress.log({"train/loss": 2.0, "perf/step_time_s": 3.0}, 4)
    os.close(main)
    line = "step        4/10 (40.0%) eta 0:00:18  train/loss=2  perf/step_time_s=3\n"  # ETA: 6 steps x 3 s
    assert capsys.readouterr().out == line * 2


def test_sample_grid_tiles_images_with_their_class_names():
    images = torch.zeros(5, 3, 64, 48, dtype=torch.uint8)
    for i in range(5):
        images[i, 0] = 40 * i  # a red level per image, to find each tile
    grid = sample_grid(images, torch.tensor([2, 0, 1, 2, 7]), ("tench, Tinca tinca", "goldfish", "shark"), 4)
    zoom = 3  # 48 px is enlarged to at least 128
    assert grid.size == (2 * 48 * zoom, 2 * (64 * zoom + LABEL_HEIGHT))  # 4 of the 5 images, 2x2
    for i in range(4):
        x, y = (i % 2) * 48 * zoom, (i // 2) * (64 * zoom + LABEL_HEIGHT)
        assert grid.getpixel((x + 5, y + 5)) == (40 * i, 0, 0)
        strip = grid.crop((x, y + 64 * zoom, x + 48 * zoom, y + 64 * zoom + LABEL_HEIGHT)).convert("L")
        assert strip.getextrema()[0] < 128  # a caption is drawn (dark text on white)


def test_plot_keeps_the_newest_value_of_a_step_logged_twice_and_names_a_missing_file(tmp_path: Path):
    rows = [{"step": 2, "train/loss": 3.0}, {"step": 4, "train/loss": 2.0}, {"step": 4, "train/loss": 2.5},
            {"step": 6, "train/loss": 1.0, "val/top1": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 8, "tra')
    assert plot.read_series(tmp_path / "metrics.jsonl")["train/loss"] == [(2, 3.0), (4, 2.5), (6, 1.0)]
    out = plot.plot(tmp_path, tmp_path / "p" / "c.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1200, 1200)  # six panels
    with pytest.raises(SystemExit) as exit_info:
        plot.main([str(tmp_path / "nothing-here")])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("override, key", [
    ("wandb.init_timeout_s=0", "wandb.init_timeout_s"), ("wandb.finish_timeout_s=-1", "wandb.finish_timeout_s"),
    ("wandb.image_grid=-1", "wandb.image_grid"), ("wandb.log_checkpoints=maybe", "wandb.log_checkpoints"),
])
def test_bad_wandb_settings_name_the_key(override: str, key: str):
    with pytest.raises(ConfigError, match=key):
        config.load(ROOT / "configs" / "smoke_cpu.yaml", [override])


def test_no_gpu_memory_metrics_off_cuda():
    assert meters.gpu_memory(torch.device("cpu")) == {}
