"""One logger interface for the loop: `log(metrics, step)`, `log_samples`, `log_checkpoint`, `close()`.

The main rank fans out to progress output (trainer/progress.py), `metrics.jsonl` and W&B
(trainer/wandb_logger.py); other ranks get a NullLogger, so callers never ask "am I rank 0?".
Also here: the W&B run id kept in the run directory, and what a run records about its environment.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

import torch

from trainer.config import WandbConfig

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id"  # in the run directory, beside config.yaml
_PACKAGES = ("torch", "torchvision", "webdataset", "wandb", "numpy", "pillow")


class Logger(Protocol):
    """What the loop calls. Images arrive as the uint8 NCHW batch the model is about to see."""

    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def log_samples(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> None: ...

    def log_checkpoint(self, path: Path, step: int, best: bool = False) -> None: ...

    def preempting(self) -> None:
        """A stop signal arrived (the run saves and exits to be resumed). Never raises."""

    def close(self) -> None: ...


class Backend(Protocol):
    """One destination of the main rank's MultiLogger."""

    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def log_image(self, key: str, image: Any, caption: str, step: int) -> None: ...

    def log_checkpoint(self, path: Path, step: int, best: bool = False) -> None: ...

    def preempting(self) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def log_samples(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        pass

    def log_checkpoint(self, path: Path, step: int, best: bool = False) -> None:
        pass

    def preempting(self) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlLogger:
    """`metrics.jsonl`: one JSON object per log call, appended (a resumed run continues the file).

    A resume from an older checkpoint logs some steps again; readers keep the last row per step.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "a", buffering=1)
        if self.file.tell() and _last_byte(path) != b"\n":  # a kill cut the last line short: end it, so
            self.file.write("\n")  # that it does not swallow the next row

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row: dict[str, Any] = {"step": step, "time": round(time.time(), 3)}
        row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))})
        self.file.write(json.dumps(row) + "\n")

    def log_image(self, key: str, image: Any, caption: str, step: int) -> None:
        # The sample grid, for people without W&B: media/<key>-<step>.png beside metrics.jsonl.
        out = self.path.parent / "media" / f"{key.replace('/', '_')}-{step:09d}.png"
        out.parent.mkdir(exist_ok=True)
        image.save(out)

    def log_checkpoint(self, path: Path, step: int, best: bool = False) -> None:
        pass

    def preempting(self) -> None:
        pass

    def close(self) -> None:
        self.file.close()

    @staticmethod
    def rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
        """(step, metrics) of every complete row of a metrics.jsonl, in order; none if there is no file."""
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:  # a line a kill cut short
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                out.append((row.pop("step"), {k: v for k, v in row.items() if k != "time"}))
        return out


class MultiLogger:
    """The main rank's logger: builds what the backends share (the sample grid) once, then fans out."""

    def __init__(self, *backends: Backend, class_names: tuple[str, ...] = (), grid_size: int = 0) -> None:
        self.backends = backends
        self.class_names, self.grid_size = class_names, grid_size

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for backend in self.backends:
            backend.log(metrics, step)

    def log_samples(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        if not self.grid_size:
            return
        from trainer.sample_grid import sample_grid

        try:
            grid = sample_grid(images, labels, self.class_names, self.grid_size)
        except Exception as e:  # a picture is never worth a run
            log.warning("could not draw the training sample grid (%s: %s)", type(e).__name__, e)
            return
        caption = f"augmented training inputs at step {step}, before normalisation"
        for backend in self.backends:
            backend.log_image("train/samples", grid, caption, step)

    def log_checkpoint(self, path: Path, step: int, best: bool = False) -> None:
        for backend in self.backends:
            backend.log_checkpoint(path, step, best)

    def preempting(self) -> None:
        for backend in self.backends:
            backend.preempting()

    def close(self) -> None:
        for backend in self.backends:
            try:
                backend.close()
            except Exception as e:  # one backend failing to close must not hide the others
                log.warning("closing %s failed: %s", type(backend).__name__, e)


def build_logger(is_main: bool, cfg: WandbConfig, run_dir: Path, run_id: str | None, config: dict[str, Any], *,
                 start_step: int = 0, end_step: int = 0, class_names: tuple[str, ...] = ()) -> Logger:
    """Progress + JSONL + W&B on the main rank (W&B per `cfg.mode`), a NullLogger elsewhere.

    `end_step` is where the run will stop (for the ETA); `config` is the resolved config as plain data.
    `run_id` is the W&B run id, which only the main rank knows (None elsewhere).
    """
    if not is_main:
        return NullLogger()
    assert run_id is not None, "the main rank resolves the W&B run id before building its logger"
    from trainer.progress import ProgressLogger

    env = environment()
    log.info("environment: %s", "  ".join(f"{k}={v}" for k, v in env.items()))
    backends: list[Backend] = [ProgressLogger(end_step, start_step), JsonlLogger(run_dir / "metrics.jsonl")]
    if cfg.mode != "disabled":
        from trainer.wandb_logger import WandbLogger

        try:
            wandb_logger = WandbLogger(cfg, run_dir, run_id, {**config, "env": env})
        except Exception as e:  # W&B trouble never stops training
            log.warning("W&B is off for this run: it could not start even offline (%s: %s)", type(e).__name__, e)
        else:
            wandb_logger.replay(JsonlLogger.rows(run_dir / "metrics.jsonl"))  # what a kill lost there
            backends.append(wandb_logger)
    return MultiLogger(*backends, class_names=class_names, grid_size=cfg.image_grid)


def resolve_run_id(run_dir: Path, from_checkpoint: object) -> str:
    """The W&B run id: the resumed checkpoint's, else the run directory's, else a new one; saved in run_dir.

    The file covers a run stopped before its first checkpoint, so its restart continues the same W&B run.
    Both sources are data (a checkpoint may come from elsewhere) and the id becomes part of paths under
    run_dir/wandb, so anything but a W&B-style id ([a-z0-9], at most 64) is ignored with a warning.
    """
    path = run_dir / RUN_ID_FILE
    saved = path.read_text(errors="replace").strip() if path.is_file() else ""
    if saved and not _valid_run_id(saved):
        log.warning("%s holds %r, not a W&B run id ([a-z0-9]+); ignoring it", path, saved[:80])
        saved = ""
    stored = from_checkpoint if isinstance(from_checkpoint, str) and _valid_run_id(from_checkpoint) else None
    if from_checkpoint is not None and stored is None:
        log.warning("the checkpoint's W&B run id %r is not a W&B run id ([a-z0-9]+); ignoring it",
                    str(from_checkpoint)[:80])
    if stored and saved and saved != stored:
        log.warning("%s says W&B run %s but the checkpoint says %s; continuing %s", path, saved, stored, stored)
    run_id = stored or saved or secrets.token_hex(4)
    if run_id != saved:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(run_id + "\n")
        os.replace(tmp, path)
    return run_id


def _valid_run_id(run_id: object) -> bool:
    return (isinstance(run_id, str) and 0 < len(run_id) <= 64 and run_id.isascii() and run_id.isalnum()
            and run_id == run_id.lower())


def environment() -> dict[str, Any]:
    """Library versions, Python, CUDA and the code's git commit, flat so W&B can filter runs on them."""
    env: dict[str, Any] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            env[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            env[name] = None
    env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    if torch.cuda.is_available():
        env["cudnn"] = torch.backends.cudnn.version()
        env["gpu"] = torch.cuda.get_device_name()
    env.update(git_state(Path(__file__).resolve().parent))
    return env


def git_state(directory: Path) -> dict[str, Any]:
    """`git_commit` and `git_dirty` of the checkout holding `directory`; None for both outside one."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):  # no git installed, or a very slow file system
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def gpu_memory(device: torch.device) -> dict[str, float]:
    """CUDA memory in GiB: now allocated, reserved by the caching allocator, and the peak since the
    last call. Host-side counters: no device sync. Empty off CUDA."""
    if device.type != "cuda":
        return {}
    gib = 2.0**30
    out = {
        "gpu/mem_allocated_gib": torch.cuda.memory_allocated(device) / gib,
        "gpu/mem_reserved_gib": torch.cuda.memory_reserved(device) / gib,
        "gpu/mem_peak_gib": torch.cuda.max_memory_allocated(device) / gib,
    }
    torch.cuda.reset_peak_memory_stats(device)
    return out


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)
