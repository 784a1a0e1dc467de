"""Hand-made answers: top-k counting, the evaluation sums, validation's top-5 on 8 classes, the
learning-rate schedule and the save decision. Each case names its step (or row) in the failure message.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import pytest
import torch

from trainer import optim, step
from trainer.config import DataConfig, ModelConfig, ScheduleConfig
from trainer.data.loader import eval_loader
from trainer.data.manifest import load_manifest
from trainer.data.transforms import Normalize
from trainer.dist import DistInfo
from trainer.model import build_model
from trainer.monitoring.meters import StepMeter, TimeAccount
from trainer.validate import validate

from helpers.common import WIDE_CLASSES

# ---- top-k ---------------------------------------------------------------------------------------

# 4 rows over 8 classes; the target's rank among the logits is 1, 3, 6 and 8.
LOGITS = torch.tensor([
    [9.0, 1, 2, 3, 4, 5, 6, 7],  # target 0: highest            -> top-1, top-5
    [1.0, 9, 8, 7, 2, 3, 4, 5],  # target 3: 3rd (9, 8, 7)      -> top-5 only
    [8.0, 7, 6, 5, 4, 3, 2, 1],  # target 5: 6th                -> neither
    [1.0, 2, 3, 4, 5, 6, 7, 8],  # target 0: last              -> neither
])
TARGETS = torch.tensor([0, 3, 5, 0])


def test_accuracy_counts_on_hand_made_logits():
    assert step.accuracy_counts(LOGITS, TARGETS).tolist() == [1.0, 2.0]
    assert step.accuracy_counts(LOGITS, TARGETS, ks=(1, 3, 6, 8)).tolist() == [1.0, 2.0, 3.0, 4.0]
    # a sample that could not be decoded (label -100) is never a hit
    assert step.accuracy_counts(LOGITS, torch.tensor([0, 3, -100, -100])).tolist() == [1.0, 2.0]


class Fixed(torch.nn.Module):
    """A 'model' that returns the hand-made logits of the rows it is given (the input holds row indices)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return LOGITS[rows.long()] + self.w


def test_evaluate_sums_loss_hits_and_count_over_batches():
    batches = [(torch.tensor([0, 1]), TARGETS[:2]), (torch.tensor([2, 3]), torch.tensor([5, -100]))]
    loss_sum, top1, top5, count = step.evaluate(Fixed(), batches, lambda x: x, nullcontext).tolist()
    expected = torch.nn.functional.cross_entropy(LOGITS[:3], TARGETS[:3], reduction="sum").item()
    assert (top1, top5, count) == (1.0, 2.0, 3.0)  # the -100 sample counts nowhere
    assert loss_sum == pytest.approx(expected, rel=1e-6)


# ---- learning-rate schedule -------------------------------------------------------------------------

SPE, TOTAL, LR = 10, 100, 0.4  # steps per epoch, total steps (10 epochs), base lr


@pytest.mark.parametrize("schedule, table", [
    (ScheduleConfig(name="step", step_epochs=3, gamma=0.1), {
        0: 0.4, 29: 0.4, 30: 0.04, 59: 0.04, 60: 0.004, 90: 0.0004}),  # boundaries at epochs 3, 6, 9
    (ScheduleConfig(name="step", step_epochs=3, gamma=0.1, warmup_epochs=2), {
        0: 0.02, 9: 0.2, 19: 0.4, 20: 0.4, 29: 0.4, 30: 0.04}),  # (step+1)/20 of the lr, then decay
    (ScheduleConfig(name="cosine", warmup_epochs=2), {
        0: 0.02, 19: 0.4, 20: 0.4, 60: 0.2, 100: 0.0}),  # cosine over the 80 steps after warmup
    (ScheduleConfig(name="cosine", min_lr=0.1), {
        0: 0.4, 50: 0.25, 100: 0.1, 150: 0.1}),  # the floor, also past the end
    (ScheduleConfig(name="constant", warmup_epochs=0.5), {
        0: 0.08, 4: 0.4, 5: 0.4, 99: 0.4}),
])
def test_lr_at_matches_the_table(schedule: ScheduleConfig, table: dict[int, float]):
    for s, want in table.items():
        got = optim.lr_at(s, SPE, TOTAL, LR, schedule)
        assert got == pytest.approx(want, abs=1e-12), f"{schedule.name} (warmup {schedule.warmup_epochs}): " \
                                                       f"step {s} has lr {got}, expected {want}"


def test_lr_is_a_pure_function_of_the_step_so_a_resume_mid_warmup_continues_the_ramp():
    schedule = ScheduleConfig(name="cosine", warmup_epochs=2)
    straight = [optim.lr_at(s, SPE, TOTAL, LR, schedule) for s in range(30)]
    resumed = [optim.lr_at(s, SPE, TOTAL, LR, schedule) for s in range(7)] + \
              [optim.lr_at(s, SPE, TOTAL, LR, schedule) for s in range(7, 30)]  # a restart at step 7
    assert resumed == straight
    assert all(a < b for a, b in zip(straight[:20], straight[1:20])), "warmup must rise every step"


def test_validation_top5_on_eight_classes_equals_a_hand_count(wide_shards):
    """Top-5 on a dataset with more than 5 classes, against a count made here from the model's logits."""
    cpu = torch.device("cpu")
    manifest = load_manifest(str(wide_shards))
    assert manifest.val is not None and len(manifest.class_names) == WIDE_CLASSES
    cfg = DataConfig(root=str(wide_shards), workers=0, image_size=32, eval_resize=36)
    torch.manual_seed(1)
    model = build_model(ModelConfig(name="torchvision:resnet18"), WIDE_CLASSES).eval()
    normalize = Normalize(cpu, channels_last=False)
    got = validate(model, manifest.val, cfg, DistInfo(0, 0, 1, cpu), normalize, nullcontext, 4, WIDE_CLASSES)

    logits, labels = [], []
    with torch.no_grad():
        for images, y in eval_loader(manifest.val, cfg, cpu, local_batch=4, rank=0, world_size=1):
            logits.append(model(normalize(images)))
            labels.append(y)
    logits, labels = torch.cat(logits), torch.cat(labels)
    beaten_by = (logits > logits.gather(1, labels[:, None])).sum(1)  # classes scored above the true one
    top1, top5 = (beaten_by == 0).float().mean().item(), (beaten_by < 5).float().mean().item()
    assert got["val/count"] == len(labels) == WIDE_CLASSES * 3
    assert 0 < top1 < top5 < 1, (top1, top5)  # neither figure is vacuous here
    assert (got["val/top1"], got["val/top5"]) == pytest.approx((top1, top5))


def test_the_meters_window_starts_at_the_epochs_start():
    meter = StepMeter(torch.device("cpu"), 8, TimeAccount())
    meter.add(torch.tensor(9.0))  # the previous epoch's tail ...
    time.sleep(0.5)  # ... then validation and the save
    meter.restart()
    meter.add(torch.tensor(1.0))
    meter.add(torch.tensor(3.0))
    loss, perf = meter.report(DistInfo(0, 0, 1, torch.device("cpu")))
    assert loss == 2.0 and perf["perf/step_time_s"] < 0.1, perf
