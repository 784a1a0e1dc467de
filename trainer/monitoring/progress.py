"""Progress on the main rank: a tqdm bar (ETA, images/s, loss) on a terminal, plain lines otherwise.

Cluster logs are files, where a bar's carriage returns are noise: there each log call prints one
greppable line, `step 40/480 (8.3%) eta 0:12:31  train/loss=2.31 ...`, on stdout.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm


class ProgressLogger:
    """A backend of the main rank's logger. `end_step`: where the run stops (0 when unknown)."""

    def __init__(self, end_step: int, start_step: int = 0, stream: TextIO | None = None) -> None:
        self.end_step, self.start_step = end_step, start_step
        self.stream = stream if stream is not None else sys.stderr
        self.first: tuple[int, float] | None = None  # (step, time) of this process's first training log
        self.bar: tqdm | None = None
        self.redirect = None
        if _is_terminal(self.stream):
            self.bar = tqdm(total=end_step or None, initial=start_step, file=self.stream, unit="step",
                            dynamic_ncols=True, smoothing=0.3, desc="train")
            # Log records would tear the bar apart; route them through tqdm.write until close().
            self.redirect = logging_redirect_tqdm()
            self.redirect.__enter__()

    def log(self, metrics: dict[str, Any], step: int) -> None:
        training = "train/loss" in metrics
        if training and self.first is None:
            self.first = (step, time.monotonic())
        if self.bar is not None and training:
            postfix = {"loss": f"{metrics['train/loss']:.4f}"}
            if "perf/images_per_s" in metrics:
                postfix["img/s"] = f"{metrics['perf/images_per_s']:.0f}"
            if "train/lr" in metrics:
                postfix["lr"] = f"{metrics['train/lr']:.3g}"
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(step - self.bar.n)
            self.bar.refresh()  # logs come seconds apart: always show the newest (update() may throttle)
            return
        line = self._line(metrics, step)
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=sys.stdout, flush=True)

    def log_image(self, key: str, image: Any, caption: str, step: int) -> None:
        pass

    def log_checkpoint(self, path: Path, step: int, best: bool = False) -> None:
        pass

    def log_trace(self, path: Path) -> None:
        pass

    def preempting(self) -> None:
        pass

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            if self.redirect is not None:
                self.redirect.__exit__(None, None, None)
            self.bar = None

    def _line(self, metrics: dict[str, Any], step: int) -> str:
        where = f"step {step:>8d}"
        if self.end_step:
            where += f"/{self.end_step} ({100 * step / self.end_step:.1f}%)"
            eta = self._eta(metrics, step)
            if eta is not None:
                where += f" eta {datetime.timedelta(seconds=round(eta))}"
        parts = [f"{k}={_fmt(v)}" for k, v in metrics.items() if isinstance(v, (int, float, str))]
        return f"{where}  " + "  ".join(parts)

    def _eta(self, metrics: dict[str, Any], step: int) -> float | None:
        """Seconds left at the rate since this process's first training log (validation included)."""
        left = max(self.end_step - step, 0)
        if self.first is not None and step > self.first[0]:
            return left * (time.monotonic() - self.first[1]) / (step - self.first[0])
        if "perf/step_time_s" in metrics:
            return left * metrics["perf/step_time_s"]
        return None


def _is_terminal(stream: TextIO) -> bool:
    """A terminal that can show a bar: tqdm hides bars on one reporting 0 rows (a pty nobody sized)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).lines > 0
    except (AttributeError, ValueError, OSError):  # a closed or file-like stream without a descriptor
        return False


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
