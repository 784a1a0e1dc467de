"""Durable checkpoints: atomic saves, the last k kept plus the best, and the newest *valid* one on resume.

A save writes a temporary file, fsyncs it, renames it into place and fsyncs the directory, so a crash
leaves either the old set or the new one. Loading first checks every record's CRC (a flipped bit would
otherwise load as silently wrong weights), then uses weights_only=True: pickled code is refused, never run.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{9})\.pt$")
BEST = "best.pt"  # a hard link to the step checkpoint with the highest val/top1 so far


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


def path_for(directory: Path, step: int) -> Path:
    return directory / f"step-{step:09d}.pt"


def save(state: dict[str, Any], directory: Path, step: int, keep_last: int) -> Path:
    """Write `state` as the checkpoint for `step`, then drop all but the newest `keep_last`."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.tmp"):  # left by a process killed mid-save
        stale.unlink(missing_ok=True)
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


def mark_best(path: Path) -> Path:
    """Make `best.pt` beside `path` the same file as `path` (a hard link; a copy where links fail)."""
    best, tmp = path.parent / BEST, path.parent / (BEST + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)  # no second copy of the bytes; survives the rotation of `path`
    except OSError:  # e.g. a filesystem without hard links
        shutil.copyfile(path, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, best)
    _fsync_dir(path.parent)
    return best


def list_checkpoints(directory: Path) -> list[Path]:
    """Step checkpoint files in step order, oldest first (best.pt is not among them)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU: CRC-checked, and without unpickling arbitrary objects."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every record and compares it with its CRC32
    except (OSError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or not a checkpoint: {e}") from e
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt: record {bad} does not match its CRC32")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((line.strip() for line in str(e).splitlines() if "unsupported" in line.lower()), str(e)[:300])
        raise CheckpointError(
            f"checkpoint {path} holds pickled Python objects, not just tensors and plain values ({detail}); "
            "it was refused and none of it ran. This trainer never writes such files: treat it as untrusted."
        ) from e
    except Exception as e:  # anything else torch cannot read back
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {e}") from e
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint (no 'model' or 'step')")
    return state


def load_latest(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, skipping (and reporting) damaged ones; None when there is none."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, load(path)
        except CheckpointError as e:
            log.warning("skipping damaged checkpoint, falling back to the one before it: %s", e)
    return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
