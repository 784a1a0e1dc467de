"""One logger interface for the loop: `log(metrics, step)`, `log_samples`, `log_checkpoint`, `log_trace`, `close()`.

A metric whose value is a list of row dicts (e.g. val/worst_classes) is a W&B table; metrics.jsonl and the
console keep the scalars only.

The main rank fans out to progress output (progress.py), `metrics.jsonl` and W&B (wandb_logger.py);
other ranks get a NullLogger, so callers never ask "am I rank 0?".
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

import torch

from trainer.config import WandbConfig
from trainer.monitoring.run_info import environment

log = logging.getLogger(__name__)


class Logger(Protocol):
    """What the loop calls. Images arrive as the uint8 NCHW batch the model is about to see."""

    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def log_samples(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> None: ...

    def log_checkpoint(self, path: Path, step: int, best: bool = False) -> None: ...

    def log_trace(self, path: Path) -> None:
        """A torch.profiler trace written in run.dir (monitoring/profiler.py)."""

    def preempting(self) -> None:
        """A stop signal arrived (the run saves and exits to be resumed). Never raises."""

    def close(self) -> None: ...


class Backend(Protocol):
    """One destination of the main rank's MultiLogger."""

    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def log_image(self, key: str, image: Any, caption: str, step: int) -> None: ...

    def log_checkpoint(self, path: Path, step: int, best: bool = False) -> None: ...

    def log_trace(self, path: Path) -> None: ...

    def preempting(self) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def log_samples(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> None:
        pass

    def log_checkpoint(self, path: Path, step: int, best: bool = False) -> None:
        pass

    def log_trace(self, path: Path) -> None:
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

    def log_trace(self, path: Path) -> None:
        pass  # the trace is a file in run.dir already

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
        from trainer.monitoring.sample_grid import sample_grid

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

    def log_trace(self, path: Path) -> None:
        for backend in self.backends:
            backend.log_trace(path)

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
                 start_step: int = 0, end_step: int = 0, class_names: tuple[str, ...] = (),
                 facts: dict[str, Any] | None = None) -> Logger:
    """Progress + JSONL + W&B on the main rank (W&B per `cfg.mode`), a NullLogger elsewhere.

    `end_step` is where the run will stop (for the ETA); `config` is the resolved config as plain data.
    `run_id` is the W&B run id, which only the main rank knows (None elsewhere). `facts` join the
    environment the run records (e.g. whether the C region decoder is in use).
    """
    if not is_main:
        return NullLogger()
    assert run_id is not None, "the main rank resolves the W&B run id before building its logger"
    from trainer.monitoring.progress import ProgressLogger

    env = {**environment(), **(facts or {})}
    log.info("environment: %s", "  ".join(f"{k}={v}" for k, v in env.items()))
    backends: list[Backend] = [ProgressLogger(end_step, start_step), JsonlLogger(run_dir / "metrics.jsonl")]
    if cfg.mode != "disabled":
        from trainer.monitoring.wandb_logger import WandbLogger

        try:
            wandb_logger = WandbLogger(cfg, run_dir, run_id, {**config, "env": env})
        except Exception as e:  # W&B trouble never stops training
            log.warning("W&B is off for this run: it could not start even offline (%s: %s)", type(e).__name__, e)
        else:
            wandb_logger.replay(JsonlLogger.rows(run_dir / "metrics.jsonl"))  # what a kill lost there
            backends.append(wandb_logger)
    return MultiLogger(*backends, class_names=class_names, grid_size=cfg.image_grid)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)
