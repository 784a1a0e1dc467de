"""Config: YAML recipes, dotted overrides, and errors that name the offending key."""

from pathlib import Path

import pytest

from trainer import config
from trainer.config import ConfigError

from helpers.common import ROOT

SMOKE = ROOT / "configs" / "smoke_cpu.yaml"


def test_default_is_the_imagenet_recipe():
    cfg = config.load()
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.optim.lr, cfg.optim.momentum) == (256, 90, 0.01, 0.9)
    assert (cfg.schedule.name, cfg.schedule.step_epochs, cfg.schedule.gamma) == ("step", 30, 0.1)


def test_overrides_are_typed_and_dotted():
    cfg = config.load(SMOKE, ["train.epochs=7", "optim.lr=0.5", "wandb.tags=a,b", "amp=bf16", "train.max_steps=3"])
    assert cfg.train.epochs == 7 and cfg.optim.lr == 0.5 and cfg.wandb.tags == ["a", "b"]
    assert cfg.amp == "bf16" and cfg.train.max_steps == 3
    assert config.load(SMOKE, ["optim.lr=1"]).optim.lr == 1.0  # an int where a float is expected is fine


@pytest.mark.parametrize("override, key", [
    (["train.epoch=3"], "train.epoch"),
    (["optimizer.lr=0.1"], "optimizer"),
    (["data.root.sub=1"], "data.root"),
])
def test_unknown_key_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(SMOKE, override)


@pytest.mark.parametrize("override, key", [
    (["train.epochs=ten"], "train.epochs"),
    (["train.batch_size=2.5"], "train.batch_size"),
    (["checkpoint.resume=maybe"], "checkpoint.resume"),
    (["amp=fp8"], "amp"),
    (["wandb.mode=sometimes"], "wandb.mode"),
    (["train.batch_size=0"], "train.batch_size"),
])
def test_wrong_type_or_value_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(SMOKE, override)


def test_unknown_key_in_a_yaml_file_names_the_key(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 1\n  batchsize: 8\n")
    with pytest.raises(ConfigError, match=r"train\.batchsize"):
        config.load(bad)


def test_dump_round_trips(tmp_path: Path):
    cfg = config.load(SMOKE, ["wandb.tags=x"])
    path = tmp_path / "c.yaml"
    path.write_text(config.dump(cfg))
    assert config.load(path) == cfg


def test_cli_rejects_a_bad_key_before_starting():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "trainer", "--config", str(SMOKE), "train.epoks=1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "train.epoks" in proc.stderr


def test_missing_data_says_how_to_prepare_it(tmp_path: Path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "trainer", f"data.root={tmp_path}/nothing", "device=cpu",
                           "wandb.mode=disabled", f"run.dir={tmp_path}/run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "_info.json" in proc.stderr and "python -m data_prep imagenet" in proc.stderr
