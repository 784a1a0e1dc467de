"""Gradient accumulation (train.accum_steps): one process accumulating 2 micro-batches trains the weights
of 2 torchrun ranks with the same global batch, because micro-batch j is the batch rank j would read and
its dropout masks and Mixup/CutMix draws are rank j's.

Real runs on the 48-image fixture: global batch 8, 2 workers, 2 epochs of 6 steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from helpers.resilience_procs import Run, load, torchrun, trainer_args

pytestmark = pytest.mark.timeout(300)

FINAL = "step-000000012.pt"


@pytest.mark.parametrize("recipe", [(), ("mix.mixup_alpha=0.8", "mix.cutmix_alpha=1.0", "train.label_smoothing=0.1")],
                         ids=["plain", "mixup-cutmix"])  # each micro-batch mixes as its virtual rank would
def test_accumulating_two_micro_batches_on_one_rank_gives_the_weights_of_two_ranks(shards: Path, tmp_path: Path,
                                                                                   recipe: tuple[str, ...]):
    two_ranks = Run(torchrun(shards, tmp_path / "ranks", *recipe), tmp_path / "ranks.log")
    assert two_ranks.finish() == 0, two_ranks.text()[-3000:]
    one_rank = Run([sys.executable, *trainer_args(shards, tmp_path / "accum", "train.accum_steps=2", *recipe)],
                   tmp_path / "accum.log")
    assert one_rank.finish() == 0, one_rank.text()[-3000:]
    ranks, accum = load(tmp_path / "ranks" / "checkpoints" / FINAL), load(tmp_path / "accum" / "checkpoints" / FINAL)
    assert accum["data"]["accum_steps"] == 2 and "accum_steps" not in ranks["data"]
    # Parameters only: DDP broadcasts rank 0's batch-norm running statistics, accumulation updates them
    # with every micro-batch, so those buffers differ by design; training-mode forward passes do not use them.
    params = [k for k, v in ranks["model"].items() if v.is_floating_point() and "running" not in k]
    assert len(params) >= 8
    moved = [k for k in params if not torch.allclose(ranks["model"][k], accum["model"][k], rtol=1e-4, atol=1e-6)]
    assert not moved, f"{len(moved)} of {len(params)} parameters differ beyond float rounding: {moved[:4]}"
    earlier = load(tmp_path / "accum" / "checkpoints" / "step-000000006.pt")["model"]  # the weights did move
    assert all(not torch.allclose(earlier[k], accum["model"][k], rtol=1e-4, atol=1e-6) for k in params[:4])


def test_a_batch_that_does_not_split_into_micro_batches_is_refused(shards: Path, tmp_path: Path):
    run = Run([sys.executable, *trainer_args(shards, tmp_path / "run", "train.accum_steps=3")], tmp_path / "run.log")
    assert run.finish() == 2
    assert "train.accum_steps=3 does not split the batch" in run.text()
