"""AsyncCheckpointer's staged copy: the tensors of the state at `stage`, the plain values of the state at
`save`; a copy staged for another step is never written."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer import checkpoint
from trainer.async_checkpoint import AsyncCheckpointer


def state(weight: float, step: int, val: float | None) -> dict:
    return {"model": {"w": torch.full((1000,), weight)}, "step": step, "val": val, "best_val_top1": val}


def saver(tmp_path: Path, written: list) -> AsyncCheckpointer:
    return AsyncCheckpointer(tmp_path, keep_last=5, keep_best=True,
                             on_saved=lambda path, step, best: written.append((path.name, step, best)))


def test_a_staged_copy_gives_the_tensors_and_the_save_the_plain_values(tmp_path: Path):
    written: list = []
    ckpt = saver(tmp_path, written)
    live = state(1.0, 10, None)
    ckpt.stage(live, 10)
    ckpt.save(state(1.0, 10, 0.75), 10, best=True)
    ckpt.wait()
    saved = checkpoint.load(tmp_path / written[0][0])
    assert written == [(written[0][0], 10, True)] and (tmp_path / "best.pt").is_file()
    assert saved["val"] == 0.75 and saved["best_val_top1"] == 0.75 and saved["step"] == 10
    assert torch.equal(saved["model"]["w"], torch.full((1000,), 1.0))


def test_a_copy_staged_for_another_step_is_not_used(tmp_path: Path):
    written: list = []
    ckpt = saver(tmp_path, written)
    ckpt.stage(state(1.0, 10, None), 10)
    ckpt.save(state(2.0, 11, None), 11, best=False)  # the step moved on: copy anew
    ckpt.close()
    saved = checkpoint.load(tmp_path / written[0][0])
    assert [w[1] for w in written] == [11] and saved["step"] == 11
    assert torch.equal(saved["model"]["w"], torch.full((1000,), 2.0))


def test_a_staged_copy_that_is_never_saved_writes_nothing(tmp_path: Path):
    written: list = []
    ckpt = saver(tmp_path, written)
    ckpt.stage(state(1.0, 10, None), 10)
    ckpt.close()  # e.g. validation raised: the epoch's checkpoint is dropped
    assert written == [] and checkpoint.list_checkpoints(tmp_path) == []
