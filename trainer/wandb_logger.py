"""The W&B backend of the main rank's logger: one W&B run per run directory, continued on every restart.

Charts use `trainer/step` as their x-axis. W&B's own row counter (`_step`) is kept in the run directory
(`wandb_step`) and passed explicitly, so it keeps increasing across restarts even offline, where W&B
cannot ask the server where the run stopped: `wandb sync` of all segments then appends, never
overwrites. Trouble (no network, no login, a timeout, a dying service) costs W&B data, never the run.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from trainer.config import WandbConfig

log = logging.getLogger(__name__)

STEP_KEY = "trainer/step"  # every chart's x-axis: a resume from an older checkpoint is drawn, not dropped
STEP_FILE = "wandb_step"  # W&B's next _step, in the run directory
_SUMMARY = {"val/top1": "max", "val/top5": "max", "val/loss": "min"}  # what the runs table shows


class WandbLogger:
    def __init__(self, cfg: WandbConfig, run_dir: Path, run_id: str, config: dict[str, Any]) -> None:
        import wandb

        self.wandb, self.cfg, self.run_dir, self.run_id = wandb, cfg, run_dir, run_id
        self.offline, self.broken = cfg.mode == "offline", False
        self.pending: tuple[Path, int, bool] | None = None  # the newest checkpoint, not yet uploaded
        kwargs = dict(
            project=cfg.project, entity=cfg.entity, name=cfg.name or run_dir.resolve().name, group=cfg.group,
            tags=cfg.tags or None, dir=str(run_dir), id=run_id, resume="allow", config=config,
            settings=wandb.Settings(init_timeout=cfg.init_timeout_s, login_timeout=cfg.init_timeout_s,
                                    finish_timeout=cfg.finish_timeout_s),
        )
        try:
            self.run = wandb.init(mode=cfg.mode, **kwargs)
        except Exception as e:  # no network, failed login, init timeout: keep training, offline
            if cfg.mode != "online":
                raise
            wandb.teardown()  # the failed attempt still holds the run id in W&B's service process
            self.run = wandb.init(mode="offline", **kwargs)
            self.offline = True
            log.warning("W&B could not start online (%s: %s). Training continues; W&B logs offline to %s "
                        "and `%s` uploads it later.", type(e).__name__, _first_line(e), run_dir / "wandb",
                        self.sync_command())
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)
        for key, summary in _SUMMARY.items():
            self.run.define_metric(key, step_metric=STEP_KEY, summary=summary)
        # Online, a resumed run knows its last row; offline only our file does.
        self.step = max(_read_int(run_dir / STEP_FILE), self.run.starting_step)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.pending and step > self.pending[1]:
            self._upload()
        self._log({STEP_KEY: step, **metrics})

    def log_image(self, key: str, image: Any, caption: str, step: int) -> None:
        self._log({STEP_KEY: step, key: self.wandb.Image(image, caption=caption)})

    def log_checkpoint(self, path: Path, step: int, best: bool = False) -> None:
        """Queue `path` as the next version of artifact checkpoint-<run id>, aliases `latest` (and `best`).

        Sent once training moves past `step` (or at close): the epoch's end saves twice at one step,
        before and after validation, and only the second, which knows whether it is the best, is sent.
        """
        if not self.cfg.log_checkpoints or self.broken:
            return
        if self.pending and self.pending[1] != step:
            self._upload()
        self.pending = (path, step, best)

    def close(self) -> None:
        # Called from the loop's `finally`: an exception on its way out marks the W&B run failed.
        exc = sys.exc_info()[1]
        failed = exc is not None and not (isinstance(exc, SystemExit) and not exc.code)
        if self.pending:
            self._upload()
        try:
            self.run.finish(exit_code=1 if failed else 0)  # bounded by wandb.finish_timeout_s
        except Exception as e:
            log.warning("W&B did not finish cleanly (%s: %s); the run's files are in %s",
                        type(e).__name__, e, self.run_dir / "wandb")
        if self.offline:  # a warning when offline was not asked for
            log.log(logging.WARNING if self.cfg.mode == "online" else logging.INFO,
                    "W&B logged offline. Upload with: %s", self.sync_command())

    def sync_command(self) -> str:
        # All offline segments of this run (one per restart); `wandb sync` sends them in start order.
        return f"wandb sync {self.run_dir / 'wandb'}/offline-run-*-{self.run_id}"

    def _upload(self) -> None:
        path, step, best = self.pending
        self.pending = None
        if not path.is_file():  # rotated away already (checkpoint.keep_last=1 and frequent saves)
            log.warning("W&B artifact skipped: checkpoint %s no longer exists", path)
            return
        aliases = ["latest", f"step-{step}"] + (["best"] if best else [])
        try:
            artifact = self.wandb.Artifact(f"checkpoint-{self.run_id}", type="model", metadata={"step": step})
            artifact.add_file(str(path), name=path.name)  # copied into W&B's staging area before returning
            self.run.log_artifact(artifact, aliases=aliases)
        except Exception as e:
            log.warning("W&B could not log checkpoint %s as an artifact (%s: %s)", path, type(e).__name__, e)

    def _log(self, row: dict[str, Any]) -> None:
        if self.broken:
            return
        try:
            self.run.log(row, step=self.step, commit=True)
        except Exception as e:  # e.g. W&B's service process died: stop logging there, keep training
            self.broken = True
            log.warning("W&B logging stopped (%s: %s); metrics.jsonl still has everything", type(e).__name__, e)
            return
        self.step += 1
        tmp = self.run_dir / (STEP_FILE + ".tmp")
        tmp.write_text(f"{self.step}\n")
        os.replace(tmp, self.run_dir / STEP_FILE)


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [""])[0]
