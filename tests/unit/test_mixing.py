"""trainer/mixing.py: soft targets sum to one; IGNORE rows stay unmixed, zero-weighted and out of every mix;
each row's pixels agree with its targets; equal seeds draw equally; the CutMix box and its lam by hand; the
unmixed loss equals torch's CrossEntropyLoss with label smoothing and ignore_index.
"""

from __future__ import annotations

import pytest
import torch

from trainer.config import MixConfig
from trainer.mixing import Mixer, cutmix_box, soft_cross_entropy
from trainer.step import IGNORE

N = 8
IGNORED = (2, 5)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Row i is the constant image i + 1 and has class i (the ignored rows: label IGNORE)."""
    images = (torch.arange(N, dtype=torch.float32) + 1).view(N, 1, 1, 1).expand(N, 3, 10, 10).contiguous()
    labels = torch.arange(N)
    labels[list(IGNORED)] = IGNORE
    return images, labels


MIXUP = MixConfig(mixup_alpha=0.8)
CUTMIX = MixConfig(cutmix_alpha=1.0)
BOTH = MixConfig(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)


@pytest.mark.parametrize("cfg", [MIXUP, CUTMIX, BOTH], ids=["mixup", "cutmix", "both"])
@pytest.mark.parametrize("step", range(6))
def test_targets_sum_to_one_ignored_rows_stay_out_and_pixels_match_targets(cfg: MixConfig, step: int):
    images, labels = batch()
    mixed = Mixer(cfg, num_classes=N, label_smoothing=0.0, seed=3)(images, labels, step=step, epoch=0)
    valid = [i for i in range(N) if i not in IGNORED]
    assert mixed.targets[valid].sum(1).tolist() == pytest.approx([1.0] * len(valid), abs=1e-6)
    assert mixed.weight.tolist() == [0.0 if i in IGNORED else 1.0 for i in range(N)]
    for i in IGNORED:
        assert torch.equal(mixed.images[i], images[i]), f"ignored row {i} was mixed"
        assert mixed.targets[i].abs().sum() == 0  # no target at all
        assert mixed.targets[:, i].abs().sum() == 0, f"ignored row {i} was mixed into another row"
    # row i's mean pixel is the targets' mix of the constant images: sum_c t_c (c + 1), for mixup and CutMix
    means = mixed.images.mean(dim=(1, 2, 3))
    expected = mixed.targets @ (torch.arange(N, dtype=torch.float32) + 1)
    assert means[valid].tolist() == pytest.approx(expected[valid].tolist(), rel=1e-5)
    assert 0 < mixed.lam <= 1


def test_batches_are_mixed_with_a_new_lam_each_step():
    images, labels = batch()
    lams = [Mixer(BOTH, N, 0.0, seed=0)(images, labels, step=s, epoch=0).lam for s in range(10)]
    # a CutMix box under 2 pixels on a 10-pixel image is empty: lam 1 (step 3 here)
    assert sum(0 < lam < 1 for lam in lams) >= 8 and len(set(lams)) >= 8, lams


def test_equal_seeds_draw_equally_and_steps_differently():
    images, labels = batch()
    a = Mixer(BOTH, N, 0.1, seed=7)(images, labels, step=4, epoch=1)
    b = Mixer(BOTH, N, 0.1, seed=7)(images, labels, step=4, epoch=1)
    c = Mixer(BOTH, N, 0.1, seed=7)(images, labels, step=5, epoch=1)
    d = Mixer(BOTH, N, 0.1, seed=8)(images, labels, step=4, epoch=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets) and a.lam == b.lam
    assert a.lam != c.lam and a.lam != d.lam


def test_cutmix_box_and_lam_by_hand():
    # lam 0.64: the box's side is sqrt(0.36) = 0.6 of 10 = 6 pixels; centred at (5, 5): rows and columns 2..8
    assert cutmix_box(0.64, 10, 10, 5, 5) == (2, 8, 2, 8)  # area 36: lam stays 1 - 36/100 = 0.64
    assert cutmix_box(0.64, 10, 10, 0, 0) == (0, 3, 0, 3)  # clipped at the corner: area 9, lam becomes 0.91
    assert cutmix_box(0.75, 20, 10, 19, 9) == (14, 20, 7, 10)  # 0.5 x (20, 10) = (10, 5) at the far corner


def test_mixup_loss_is_lams_mix_of_the_two_losses():
    images, labels = batch()
    mixed = Mixer(MIXUP, N, 0.0, seed=1)(images, labels, step=0, epoch=0)
    logits = torch.randn(N, N, generator=torch.Generator().manual_seed(0))
    partner = mixed.targets.clone()
    own = torch.where(labels == IGNORE, 0, labels)
    partner[torch.arange(N), own] -= mixed.lam  # what is left of each valid row is its partner's class
    valid = labels != IGNORE
    partner_class = partner[valid].argmax(1)
    ce = torch.nn.functional.cross_entropy
    want = mixed.lam * ce(logits[valid], labels[valid]) + (1 - mixed.lam) * ce(logits[valid], partner_class)
    assert soft_cross_entropy(logits, mixed.targets, mixed.weight).item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("cfg, epoch", [(MixConfig(mixup_alpha=0.8, off_epoch=3), 3), (MixConfig(), 0)])
def test_unmixed_batches_give_torchs_label_smoothed_loss(cfg: MixConfig, epoch: int):
    images, labels = batch()
    mixed = Mixer(cfg, N, 0.1, seed=1)(images, labels, step=0, epoch=epoch)
    assert mixed.lam == 1.0 and torch.equal(mixed.images, images)
    logits = torch.randn(N, N, generator=torch.Generator().manual_seed(0))
    want = torch.nn.CrossEntropyLoss(ignore_index=IGNORE, label_smoothing=0.1)(logits, labels)
    assert soft_cross_entropy(logits, mixed.targets, mixed.weight).item() == pytest.approx(want.item(), rel=1e-6)


def test_mixing_goes_on_before_the_off_epoch():
    images, labels = batch()
    assert Mixer(MixConfig(mixup_alpha=0.8, off_epoch=3), N, 0.1, seed=1)(images, labels, step=0, epoch=2).lam < 1


def test_a_batch_with_one_valid_sample_is_not_mixed():
    images, labels = batch()
    labels[1:] = IGNORE
    mixed = Mixer(BOTH, N, 0.0, seed=0)(images, labels, step=0, epoch=0)
    assert mixed.lam == 1.0 and torch.equal(mixed.images, images) and mixed.weight.sum() == 1
