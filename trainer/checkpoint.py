"""Durable checkpoints: atomic saves, the last k kept, and the newest *valid* one found on resume.

A save writes a temporary file, fsyncs it, renames it into place and fsyncs the directory, so a crash
leaves either the old set or the new one. Loading uses weights_only=True: a checkpoint that carries
pickled code is refused, never executed.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{9})\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


def path_for(directory: Path, step: int) -> Path:
    return directory / f"step-{step:09d}.pt"


def save(state: dict[str, Any], directory: Path, step: int, keep_last: int) -> Path:
    """Write `state` as the checkpoint for `step`, then drop all but the newest `keep_last`."""
    directory.mkdir(parents=True, exist_ok=True)
    final = path_for(directory, step)
    tmp = final.with_suffix(".pt.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    _fsync_dir(directory)
    for old in list_checkpoints(directory)[:-keep_last]:
        old.unlink(missing_ok=True)
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in step order, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU without unpickling arbitrary objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad magic, or a disallowed pickle global
        raise CheckpointError(f"checkpoint {path} cannot be loaded safely: {e}") from e
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint (no 'model' or 'step')")
    return state


def load_latest(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, skipping (and reporting) damaged ones; None when there is none."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, load(path)
        except CheckpointError as e:
            log.warning("skipping damaged checkpoint: %s", e)
    return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
