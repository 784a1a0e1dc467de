"""trainer/tta.py and evaluate's report: flip averaging of a model antisymmetric under the flip, the ten
crops' positions, ten-crop averaging of known predictions, per-class counts by hand, the FixRes evaluation
crop, and `python -m trainer.evaluate --tta` on real shards.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from trainer import config, evaluate, step
from trainer.config import DataConfig
from trainer.model import build_model
from trainer.resilience import checkpoint
from trainer.tta import TTA, per_class_report, tta_data, views
from trainer.validate import eval_data

from helpers.common import CLASSES


class Antisymmetric(torch.nn.Module):
    """logits = [s(x), m(x)]: s flips sign under a horizontal flip (a ramp across the width), m does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.arange(x.shape[-1], dtype=x.dtype) - (x.shape[-1] - 1) / 2
        return torch.stack([(x * ramp).sum(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3))], dim=1)


def test_flip_averages_the_softmax_of_the_image_and_its_mirror():
    x = torch.rand(3, 1, 4, 6, generator=torch.Generator().manual_seed(0))
    s, m = Antisymmetric()(x).unbind(1)
    assert torch.allclose(Antisymmetric()(x.flip(-1))[:, 0], -s)  # the model is antisymmetric
    out = TTA(Antisymmetric(), "flip", 4)(x).exp()
    for i in range(3):
        sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731 - softmax of 2 logits
        p0 = (sig(s[i].item() - m[i].item()) + sig(-s[i].item() - m[i].item())) / 2
        assert out[i].tolist() == pytest.approx([p0, 1 - p0], rel=1e-6)


def test_ten_crops_are_the_corners_the_centre_and_their_mirrors():
    x = torch.arange(36.0).view(1, 1, 6, 6)  # pixel (r, c) holds 6r + c
    crops = views(x, "ten_crop", 4)
    assert len(crops) == 10 and all(c.shape == (1, 1, 4, 4) for c in crops)
    assert [c[0, 0, 0, 0].item() for c in crops[:5]] == [0, 2, 12, 14, 7]  # top-left pixels
    for c, mirror in zip(crops[:5], crops[5:]):
        assert torch.equal(mirror, c.flip(-1))
    assert [v.shape[-1] for v in views(x, "flip", 4)] == [6, 6] and len(views(x, "none", 4)) == 1


def test_ten_crop_averages_the_predictions_of_the_ten_views():
    class ByCorner(torch.nn.Module):  # predicts class 1 with p = pixel(0, 0) / 100, as log-probabilities
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = x[:, 0, 0, 0] / 100
            return torch.stack([1 - p, p], dim=1).log()

    x = torch.arange(36.0).view(1, 1, 6, 6)
    # top-left pixels of the crops: 0, 2, 12, 14, 7; of their mirrors: 3, 5, 15, 17, 10 -> mean 8.5
    assert TTA(ByCorner(), "ten_crop", 4)(x).exp()[0].tolist() == pytest.approx([0.915, 0.085], rel=1e-6)


LOGITS = torch.tensor([[5.0, 1, 0], [0.0, 5, 1], [5.0, 0, 1], [0.0, 1, 5], [0.0, 5, 1], [1.0, 2, 0]])
TARGETS = torch.tensor([0, 1, 1, 2, -100, 1])  # hits: yes, yes, no, yes, (ignored), yes


def test_a_probability_that_underflows_in_every_view_stays_finite():
    class Sure(torch.nn.Module):  # class 0 by 1000 logits: class 1's softmax is 0 in float32
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[1000.0, 0.0]]).expand(x.shape[0], 2)

    out = TTA(Sure(), "flip", 4)(torch.zeros(3, 3, 4, 4))
    assert torch.isfinite(out).all() and out[:, 1].tolist() == pytest.approx([-1000.0] * 3)


def test_per_class_counts_and_the_worst_classes_by_hand():
    class Rows(torch.nn.Module):  # the hand-made logits of the rows it is given
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, rows: torch.Tensor) -> torch.Tensor:
            return LOGITS[rows.long()] + self.w

    per_class = torch.zeros(2, 3)
    batches = [(torch.tensor([0, 1, 2]), TARGETS[:3]), (torch.tensor([3, 4, 5]), TARGETS[3:])]
    totals = step.evaluate(Rows(), batches, lambda x: x, nullcontext, per_class=per_class)
    assert per_class.tolist() == [[1, 3, 1], [1, 2, 1]]  # class 1: rows 1, 2, 5; row 2 missed
    assert totals[1].item() == per_class[1].sum().item() == 4 and totals[3].item() == 5
    report = per_class_report(per_class, ("cat", "dog", "fox"), worst=2)
    assert report["val/per_class_top1"] == pytest.approx([1.0, 2 / 3, 1.0])
    assert report["val/worst_classes"] == [{"class": 1, "name": "dog", "top1": pytest.approx(2 / 3), "count": 3},
                                           {"class": 0, "name": "cat", "top1": 1.0, "count": 1}]
    assert per_class_report(torch.tensor([[0.0, 2], [0, 1]]), ())["val/per_class_top1"] == [None, 0.5]


@pytest.mark.parametrize("kwargs, crop, resize", [
    ({}, 224, 256),
    ({"image_size": 176, "eval_image_size": 224}, 224, 256),  # FixRes: train at 176, test at 224
    ({"eval_image_size": 288, "eval_resize": 0}, 288, 329),  # 0: scaled with the crop, 288 x 256/224
    ({"image_size": 160, "eval_resize": 0}, 160, 183),
])
def test_the_evaluation_crop_and_resize(kwargs: dict, crop: int, resize: int):
    data = eval_data(DataConfig(**kwargs))
    assert (data.image_size, data.eval_resize) == (crop, resize)
    ten = eval_data(tta_data(DataConfig(**kwargs), "ten_crop"))
    assert (ten.image_size, ten.eval_resize) == (resize, resize)  # the central square the crops come from


def test_an_eval_resize_below_the_eval_crop_is_refused():
    with pytest.raises(config.ConfigError, match=r"data\.eval_resize=256 must be >= data\.eval_image_size=288"):
        config.load(None, ["data.eval_image_size=288"])


def test_evaluate_reports_per_class_accuracy_and_runs_tta(shards: Path, tmp_path: Path, capsys):
    cfg = config.load(None, [f"data.root={shards}", "model.name=tiny_cnn", "model.num_classes=0", "data.image_size=32",
                             "data.eval_resize=36", "device=cpu", "data.workers=0", "train.batch_size=8",
                             "wandb.mode=disabled"])
    torch.manual_seed(0)
    state = {"model": build_model(cfg.model, CLASSES).state_dict(), "step": 0, "epoch": 0,
             "config": config.to_dict(cfg)}
    path = checkpoint.save(state, tmp_path, 0, keep_last=2)
    reports = {}
    for tta in ("none", "flip", "ten_crop"):
        assert evaluate.main(["--checkpoint", str(path), "--tta", tta, f"data.root={shards}"]) == 0
        reports[tta] = json.loads(capsys.readouterr().out)
    for tta, r in reports.items():
        assert r["tta"] == tta and r["val/count"] == 12
        counts = [r["val/count"] / CLASSES] * CLASSES  # 3 validation images per class
        top1 = sum(t * n for t, n in zip(r["val/per_class_top1"], counts)) / r["val/count"]
        assert top1 == pytest.approx(r["val/top1"]), tta
        assert len(r["val/worst_classes"]) == CLASSES
    assert reports["none"]["val/loss"] != reports["flip"]["val/loss"] != reports["ten_crop"]["val/loss"]
