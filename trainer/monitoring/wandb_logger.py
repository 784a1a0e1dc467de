"""The W&B backend of the main rank's logger: one W&B run per run directory, continued on every restart.

Charts use `trainer/step` as their x-axis. W&B's own row counter (`_step`) is kept in the run directory
(`wandb_step`) and passed explicitly, so it keeps increasing across restarts even offline, where W&B
cannot ask the server where the run stopped: `wandb sync` of all segments then appends, never
overwrites. Each start logs again the rows of metrics.jsonl that W&B's own files of earlier starts lack
(`replay`): a SIGKILL loses what wandb-core had not yet written. Trouble (no network, no login, a
timeout, a dying service) costs W&B data, never the run.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainer.config import WandbConfig
from trainer.errors import EXIT_PREEMPTED, first_line
from trainer.monitoring.wandb_history import STEP_KEY, held_rows, signature

log = logging.getLogger(__name__)

STEP_FILE = "wandb_step"  # W&B's next _step, in the run directory
_SUMMARY = {"val/top1": "max", "val/top5": "max", "val/loss": "min"}  # what the runs table shows

Row = tuple[int, dict[str, Any]]  # (trainer step, metrics) of one log call: one line of metrics.jsonl


class WandbLogger:
    def __init__(self, cfg: WandbConfig, run_dir: Path, run_id: str, config: dict[str, Any]) -> None:
        import wandb

        self.wandb, self.cfg, self.run_dir, self.run_id = wandb, cfg, run_dir, run_id
        self.offline, self.broken, self.preempted = cfg.mode == "offline", False, False
        kwargs: dict[str, Any] = dict(
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
                        "and `%s` uploads it later.", type(e).__name__, first_line(e), run_dir / "wandb",
                        self.sync_command())
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)
        for key, summary in _SUMMARY.items():
            self.run.define_metric(key, step_metric=STEP_KEY, summary=summary)
        # Online, a resumed run knows its last row; offline only our file does.
        self.step = max(_read_int(run_dir / STEP_FILE), self.run.starting_step)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._log({STEP_KEY: step, **metrics})

    def replay(self, rows: Iterable[Row]) -> int:
        """Log again the rows of metrics.jsonl that this W&B run lacks; returns how many.

        wandb-core writes its file every ~15 s, so a SIGKILL loses up to that much; a W&B that broke or
        was off for a start lost more. The files of earlier starts say what W&B holds (`held_rows`).
        Each row is matched at most once, so a step logged twice (a resume from an older checkpoint)
        stays twice and nothing W&B holds is sent again. Call before the first `log` of this start.
        """
        if self.broken:
            return 0
        try:
            held = held_rows(self.run_dir / "wandb", self.run_id, skip=Path(self.run.settings.sync_dir),
                             online_below=None if self.offline else self.run.starting_step)
        except Exception as e:  # W&B's files are W&B's business: unreadable means no replay, not no run
            log.warning("W&B: could not read this run's earlier W&B files (%s: %s); rows a kill lost there "
                        "are not logged again", type(e).__name__, e)
            return 0
        missing = []
        for step, metrics in rows:
            key = signature(step, metrics)
            if held[key]:
                held[key] -= 1
            else:
                missing.append((step, metrics))
        for step, metrics in missing:
            self._log({STEP_KEY: step, **metrics})
        if missing:
            log.info("W&B lacked %d rows of metrics.jsonl (steps %d to %d), lost by an earlier start; logged "
                     "them again", len(missing), min(s for s, _ in missing), max(s for s, _ in missing))
        return len(missing)

    def preempting(self) -> None:
        """A stop signal arrived: W&B shows the run as preempted, to be resumed, not crashed or finished.

        `close` then ends the W&B run with the trainer's preemption status (75). Never raises.
        """
        self.preempted = True
        if self.broken:
            return
        try:
            self.run.mark_preempting()
        except Exception as e:
            log.warning("W&B could not mark the run as preempting (%s: %s)", type(e).__name__, e)

    def log_image(self, key: str, image: Any, caption: str, step: int) -> None:
        self._log({STEP_KEY: step, key: self.wandb.Image(image, caption=caption)})

    def log_checkpoint(self, path: Path, step: int, best: bool = False) -> None:
        """Log `path` (durable by now) as the next version of artifact checkpoint-<run id>, aliases `latest`,
        `step-<step>` (and `best`). W&B copies the file into its staging area before this returns."""
        if not self.cfg.log_checkpoints or self.broken:
            return
        if not path.is_file():  # removed meanwhile (e.g. by hand, or by a second writer despite the lock)
            log.warning("W&B artifact skipped: checkpoint %s no longer exists", path)
            return
        aliases = ["latest", f"step-{step}"] + (["best"] if best else [])
        try:
            artifact = self.wandb.Artifact(f"checkpoint-{self.run_id}", type="model", metadata={"step": step})
            artifact.add_file(str(path), name=path.name)
            self.run.log_artifact(artifact, aliases=aliases)
        except Exception as e:
            log.warning("W&B could not log checkpoint %s as an artifact (%s: %s)", path, type(e).__name__, e)

    def log_trace(self, path: Path) -> None:
        """Upload a torch.profiler trace (trainer/monitoring/profiler.py) as artifact profile-<run id>."""
        if self.broken:
            return
        try:
            artifact = self.wandb.Artifact(f"profile-{self.run_id}", type="profile")
            artifact.add_file(str(path), name=path.name)
            self.run.log_artifact(artifact)
        except Exception as e:
            log.warning("W&B could not log the profiler trace %s (%s: %s)", path, type(e).__name__, e)

    def _table(self, rows: list[dict[str, Any]]) -> Any:
        columns = list(rows[0])
        return self.wandb.Table(columns=list[str | int](columns), data=[[r.get(c) for c in columns] for r in rows])

    def close(self) -> None:
        # Called from the loop's `finally`: an exception on its way out marks the W&B run failed.
        exc = sys.exc_info()[1]
        failed = exc is not None and not (isinstance(exc, SystemExit) and not exc.code)
        try:
            # Bounded by wandb.finish_timeout_s. Non-zero after `preempting`: "preempted", not "finished".
            self.run.finish(exit_code=1 if failed else EXIT_PREEMPTED if self.preempted else 0)
        except Exception as e:
            log.warning("W&B did not finish cleanly (%s: %s); the run's files are in %s",
                        type(e).__name__, e, self.run_dir / "wandb")
        if self.offline:  # a warning when offline was not asked for
            log.log(logging.WARNING if self.cfg.mode == "online" else logging.INFO,
                    "W&B logged offline. Upload with: %s", self.sync_command())

    def sync_command(self) -> str:
        # All offline segments of this run (one per restart); `wandb sync` sends them in start order.
        return f"wandb sync {self.run_dir / 'wandb'}/offline-run-*-{self.run_id}"

    def _log(self, row: dict[str, Any]) -> None:
        if self.broken:
            return
        try:
            row = {k: self._table(v) if _is_rows(v) else v for k, v in row.items()}
            self.run.log(row, step=self.step, commit=True)
        except Exception as e:  # e.g. W&B's service process died: stop logging there, keep training
            self.broken = True
            log.warning("W&B logging stopped (%s: %s); metrics.jsonl still has everything", type(e).__name__, e)
            return
        self.step += 1
        tmp = self.run_dir / (STEP_FILE + ".tmp")
        tmp.write_text(f"{self.step}\n")
        os.replace(tmp, self.run_dir / STEP_FILE)


def _is_rows(value: Any) -> bool:
    """A list of row dicts (e.g. val/worst_classes): logged as a W&B table."""
    return isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0
