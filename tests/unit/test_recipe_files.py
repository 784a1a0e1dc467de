"""Every recipe in configs/ loads (a typo or a refused combination there fails here), and the two recipe
menus hold what docs/recipes.md says they hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer import config

from helpers.common import ROOT

RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_recipes():
    assert {"alexnet_imagenet.yaml", "alexnet_lars_8k.yaml", "alexnet_modern.yaml"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads(path: Path):
    config.load(path)


def test_the_lars_recipe_is_you_et_als_setting():
    cfg = config.load(ROOT / "configs" / "alexnet_lars_8k.yaml")
    assert (cfg.optim.name, cfg.train.batch_size, cfg.schedule.name, cfg.schedule.power) == ("lars", 8192, "poly", 2)
    assert cfg.schedule.warmup_epochs > 0 and cfg.optim.trust_coeff == 0.001 and cfg.model.name == "alexnet_bn"


def test_the_modern_recipe_switches_everything_on():
    cfg = config.load(ROOT / "configs" / "alexnet_modern.yaml")
    assert cfg.data.auto_augment == "trivialaugment" and cfg.data.random_erasing > 0
    assert cfg.mix.enabled and cfg.train.ema_decay > 0 and cfg.train.label_smoothing > 0
    assert cfg.schedule.name == "cosine" and (cfg.data.image_size, cfg.data.eval_size) == (200, 224)
