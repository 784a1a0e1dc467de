"""One logger interface, `log(metrics, step)` and `close()`, with console, JSONL and W&B backends.

Non-main ranks get a NullLogger, so callers never ask "am I rank 0?". W&B trouble never stops a
run: a failed start falls back to offline mode with one warning.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from trainer.config import WandbConfig

log = logging.getLogger(__name__)

STEP_KEY = "trainer/step"  # W&B's x-axis for every metric, so a resume from an older step is kept


class Logger(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class ConsoleLogger:
    """Plain, greppable lines: cluster logs are files, not terminals."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        parts = [f"{k}={_fmt(v)}" for k, v in metrics.items() if isinstance(v, (int, float, str))]
        print(f"step {step:>8d}  " + "  ".join(parts), file=sys.stdout, flush=True)

    def close(self) -> None:
        pass


class JsonlLogger:
    """`metrics.jsonl`: one JSON object per log call, appended (a resumed run continues the file)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", buffering=1)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {"step": step, "time": round(time.time(), 3)}
        row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))})
        self.file.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self.file.close()


class WandbLogger:
    def __init__(self, cfg: WandbConfig, run_dir: Path, run_id: str, config: dict[str, Any]) -> None:
        import wandb

        self.wandb = wandb
        kwargs = dict(
            project=cfg.project, entity=cfg.entity, name=cfg.name, group=cfg.group, tags=cfg.tags or None,
            dir=str(run_dir), id=run_id, resume="allow", config=config,
        )
        try:
            self.run = wandb.init(mode=cfg.mode, **kwargs)
        except Exception as e:  # no network, bad login, init timeout: keep training, offline
            if cfg.mode != "online":
                raise
            log.warning("W&B could not start online (%s); logging offline. Sync later: wandb sync %s/wandb",
                        e, run_dir)
            self.run = wandb.init(mode="offline", **kwargs)
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log({STEP_KEY: step, **metrics})

    def close(self) -> None:
        self.run.finish()


class MultiLogger:
    def __init__(self, *loggers: Logger) -> None:
        self.loggers = loggers

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def close(self) -> None:
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as e:  # one backend failing to close must not hide the others
                log.warning("closing %s failed: %s", type(logger).__name__, e)


def build_logger(is_main: bool, cfg: WandbConfig, run_dir: Path, run_id: str, config: dict[str, Any]) -> Logger:
    if not is_main:
        return NullLogger()
    loggers: list[Logger] = [ConsoleLogger(), JsonlLogger(run_dir / "metrics.jsonl")]
    if cfg.mode != "disabled":
        loggers.append(WandbLogger(cfg, run_dir, run_id, config))
    return MultiLogger(*loggers)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
