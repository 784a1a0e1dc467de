"""What a run records about itself: its W&B run id (kept in the run directory) and its environment
(library versions, CUDA, the code's git state).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import secrets
import subprocess
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id"  # in the run directory, beside config.yaml
_PACKAGES = ("torch", "torchvision", "webdataset", "wandb", "numpy", "pillow")


def resolve_run_id(run_dir: Path, from_checkpoint: object) -> str:
    """The W&B run id: the resumed checkpoint's, else the run directory's, else a sweep agent's
    (WANDB_RUN_ID), else a new one; saved in run_dir.

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
    # a W&B sweep agent names the run it started in WANDB_RUN_ID (launch/sweep.yaml): a new run takes it
    agent = os.environ.get("WANDB_RUN_ID", "")
    run_id = stored or saved or (agent if _valid_run_id(agent) else "") or secrets.token_hex(4)
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
