"""Durable checkpoints: atomic saves, the last k kept plus the best, and the newest *valid* one on resume.

A save writes a temporary file, fsyncs it, renames it into place and fsyncs the directory, so a crash
leaves either the old set or the new one. "Newest" means last written (file modification time), not the
highest step: a run restarted with checkpoint.resume=false, or one whose step counter moved back under a
new data plan, writes lower step numbers than files already there. Rotation only removes files written
before the one just saved. Loading first checks every record's CRC (a flipped bit would otherwise load as
silently wrong weights), then uses weights_only=True: pickled code is refused, never run. A damaged file
is renamed to *.damaged (kept, but out of rotation and resume).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from trainer.errors import CheckpointError, CheckpointWriteError, first_line

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{9})\.pt$")
BEST = "best.pt"  # a hard link to the step checkpoint with the highest val/top1 so far
# Test hook: seconds to wait between writing a checkpoint's temp file and renaming it into place, so a
# test can kill or stop a run while a (background) save is in flight.
DELAY_ENV = "TRAINER_TEST_CHECKPOINT_DELAY"


def path_for(directory: Path, step: int) -> Path:
    return directory / f"step-{step:09d}.pt"


def save(state: dict[str, Any], directory: Path, step: int, keep_last: int) -> Path:
    """Write `state` as the checkpoint for `step`, then drop all but the `keep_last` last written."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.tmp"):  # left by a process killed mid-save
        stale.unlink(missing_ok=True)
    final = path_for(directory, step)
    tmp = final.with_suffix(".pt.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        time.sleep(float(os.environ.get(DELAY_ENV, 0)))
        os.replace(tmp, final)
        _fsync_dir(directory)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        tmp.unlink(missing_ok=True)
        kept = list_checkpoints(directory)
        raise CheckpointWriteError(
            f"could not write checkpoint {final} ({first_line(e)}); nothing was saved over the existing ones"
            f"{f', the newest of which is {kept[-1]}' if kept else ''}. Free space or fix permissions on "
            f"{directory}, then run the same command to resume from it.") from e
    for old in list_checkpoints(directory)[:-keep_last]:
        if old != final:  # never the file just written, whatever the clocks say
            old.unlink(missing_ok=True)
    return final


def due(step: int, *, every_steps: int, epoch_done: bool, clock_due: bool = False, stop: bool = False) -> bool:
    """Whether to save right after `step`: on a stop request, else mid-epoch every `every_steps` steps
    (checkpoint.every_steps) or when checkpoint.every_minutes has passed (`clock_due`). Never at the end
    of an epoch: the loop saves there anyway, before and after validation."""
    if stop:
        return True
    if epoch_done:
        return False
    return (every_steps > 0 and step % every_steps == 0) or clock_due


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
    """Step checkpoint files in the order they were written, oldest first (best.pt is not among them)."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        if match := _NAME.match(p.name):
            try:
                found.append((p.stat().st_mtime_ns, int(match[1]), p))
            except FileNotFoundError:  # removed meanwhile
                continue
    return [p for _, _, p in sorted(found)]


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
    """The last written checkpoint that loads; None in a directory without checkpoints.

    A damaged one is reported and renamed to *.damaged, and the one written before it is tried. When no
    step checkpoint loads, best.pt is the last resort; when nothing loads, a CheckpointError: starting
    over from step 0 is for the user to decide (an empty run.dir, or checkpoint.resume=false)."""
    candidates = list_checkpoints(directory)
    for path in reversed(candidates):
        try:
            return path, load(path)
        except CheckpointError as e:
            log.warning("skipping damaged checkpoint, falling back to the one before it: %s", e)
            _quarantine(path)
    best = directory / BEST
    if best.exists():
        try:
            state = load(best)
            log.warning("no step checkpoint in %s loads; resuming from %s (step %d), the best one", directory,
                        best, state["step"])
            return best, state
        except CheckpointError as e:
            log.warning("%s", e)
    damaged = sorted(directory.glob("*.damaged")) if directory.is_dir() else []
    if candidates or damaged or best.exists():
        raise CheckpointError(
            f"no checkpoint in {directory} can be loaded ({len(damaged)} damaged: "
            f"{', '.join(p.name for p in damaged[:5])}{' ...' if len(damaged) > 5 else ''}); refusing to start "
            "over from step 0 silently. Restore a checkpoint there, or start a new run with another run.dir "
            "or checkpoint.resume=false.")
    return None


def _quarantine(path: Path) -> None:
    try:
        os.replace(path, path.with_name(path.name + ".damaged"))
    except OSError as e:  # e.g. a read-only copy of a run: then it simply stays in the list
        log.warning("could not rename damaged checkpoint %s: %s", path, e)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
