"""Checkpoints written in the background: the loop blocks only while the state is copied to host memory.

A thread runs checkpoint.save, the same durable writer as a synchronous save (temp file, fsync, rename,
fsync the directory, rotation), then best.pt; so a SIGKILL during a background write leaves the
previous checkpoint valid, exactly as during a synchronous one. At most one save is in flight: the next
`save`, a stop, the end of the run and an exception all `wait` for it, and `wait` raises what the write
raised (a full disk: CheckpointWriteError, exit status 5). A thread over our own writer rather than
torch.distributed.checkpoint.async_save: DCP writes a directory of per-rank shards with its own
metadata, which would give up the single CRC-checked, weights_only file that resume, evaluate and
export read; with one writer (the main rank) and ~400 MB, the copy is what blocks, not the format.

The copy itself can run while validation does (`stage`): validation reads the weights but never
writes them, so at the epoch's end the loop blocks only for what validation did not already hide.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trainer.resilience import checkpoint

log = logging.getLogger(__name__)

Saved = Callable[[Path, int, bool], None]  # (path, step, best): called on the caller's thread once durable


class AsyncCheckpointer:
    def __init__(self, directory: Path, keep_last: int, keep_best: bool, on_saved: Saved,
                 background: bool = True) -> None:
        self.directory, self.keep_last, self.keep_best = directory, keep_last, keep_best
        self.on_saved, self.background = on_saved, background
        self._thread: threading.Thread | None = None
        self._result: tuple[Path, int, bool] | BaseException | None = None
        # Host buffers, reused from save to save: no allocation (and no page zeroing by the kernel) per save;
        # pinned for device tensors, so their copies are asynchronous. Reuse is safe: `save` waits first.
        self._buffers: dict[str, torch.Tensor] = {}
        self._staging: tuple[int, threading.Thread, list[Any]] | None = None  # (step, copier, its snapshot or error)

    def stage(self, state: dict[str, Any], step: int) -> None:
        """Begin copying `state` to host memory in the background. Until `save` for the same step, the caller
        must not change its tensors (validation only reads them); `save` then waits for the copy instead
        of making it. Synchronous savers copy in `save`, as they write."""
        if not self.background:
            return
        self.wait()  # the buffers are free once the previous write is done
        result: list[Any] = []

        def copy_state() -> None:
            try:
                result.append(self._snapshot(state))
            except BaseException as e:  # noqa: BLE001 - raised on the loop's thread by `save`
                result.append(e)

        copier = threading.Thread(target=copy_state, name=f"checkpoint-stage-{step}", daemon=True)
        copier.start()
        self._staging = (step, copier, result)

    def save(self, state: dict[str, Any], step: int, best: bool) -> None:
        """Snapshot `state` (blocking: a copy into host memory, or the rest of a staged one) and write it in
        the background. A copy staged for this step supplies the tensors; `state` the plain values that
        may have changed since (e.g. the validation metrics)."""
        self.wait()
        snapshot = self._take_staged(step)
        if snapshot is None:
            snapshot = self._snapshot(state)
        else:
            snapshot.update({k: copy.deepcopy(v) for k, v in state.items() if not _holds_tensors(v)})
        if not self.background:
            self._write(snapshot, step, best)
            self.wait()
            return
        self._thread = threading.Thread(target=self._write, args=(snapshot, step, best),
                                        name=f"checkpoint-{step}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Block until the save in flight (if any) is durable; raise what it raised."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        result, self._result = self._result, None
        if isinstance(result, BaseException):
            raise result
        if result is not None:
            self.on_saved(*result)

    def close(self) -> None:
        """`wait` on the way out after an error: a failed write is logged, the first error stays the one raised."""
        self._take_staged(None)  # an unfinished epoch's copy is dropped, never written
        try:
            self.wait()
        except Exception as e:  # noqa: BLE001 - another exception is already on its way out
            log.error("%s", e)

    def _take_staged(self, step: int | None) -> dict[str, Any] | None:
        """The copy staged for `step`, once complete; None (after it ends) if none was staged for it."""
        if self._staging is None:
            return None
        staged_step, copier, result = self._staging
        self._staging = None
        copier.join()
        if staged_step != step:  # another step's state: copy anew
            return None
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    def _snapshot(self, state: dict[str, Any]) -> dict[str, Any]:
        snapshot = self._to_host(state, "")
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the non-blocking device-to-host copies have landed
        return snapshot

    def _write(self, snapshot: dict[str, Any], step: int, best: bool) -> None:
        try:
            path = checkpoint.save(snapshot, self.directory, step, self.keep_last)
            if best and self.keep_best:
                checkpoint.mark_best(path)
            self._result = (path, step, best)
        except BaseException as e:  # noqa: BLE001 - handed to the loop's thread by `wait`
            self._result = e

    def _to_host(self, value: Any, key: str) -> Any:
        """A copy of `value` that training can no longer change: tensors on the host, plain data copied."""
        if isinstance(value, torch.Tensor):
            buffer = self._buffers.get(key)
            if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype:
                buffer = self._buffers[key] = torch.empty(value.shape, dtype=value.dtype,
                                                          pin_memory=value.device.type == "cuda")
            return buffer.copy_(value.detach(), non_blocking=value.device.type == "cuda")
        if isinstance(value, dict):
            return {k: self._to_host(v, f"{key}/{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._to_host(v, f"{key}/{i}") for i, v in enumerate(value))
        return copy.deepcopy(value)


def _holds_tensors(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(_holds_tensors(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensors(v) for v in value)
    return False
