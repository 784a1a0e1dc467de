"""The recipes, evaluation and export on the CPU, with real processes and real shards.

Both recipes train a few steps on the tiny shards; `python -m trainer.evaluate` reproduces the
validation metrics the run logged (on 1 and on 2 torchrun processes); the export gives the
checkpoint's logits; the FLOP count equals a hand count of the layers.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from trainer import config
from trainer.model import AlexNet

from helpers.common import CLASSES, ROOT, TRAIN_PER_CLASS, VAL_PER_CLASS, run_module

BATCH, STEPS = 8, 3
STEPS_PER_EPOCH = CLASSES * TRAIN_PER_CLASS // BATCH
VAL_IMAGES = CLASSES * VAL_PER_CLASS
REFERENCE, FAST = ROOT / "configs" / "alexnet_imagenet.yaml", ROOT / "configs" / "alexnet_fast.yaml"
MODERN = ROOT / "configs" / "alexnet_modern.yaml"


def train(recipe: Path, shards: Path, run_dir: Path, *overrides: str) -> Path:
    """A few steps of `recipe` as written, except the dataset, the batch and what the CPU cannot do."""
    run_module("trainer", "--config", str(recipe), f"data.root={shards}", f"run.dir={run_dir}",
               f"train.batch_size={BATCH}", f"train.max_steps={STEPS}", "train.log_every=1", "data.workers=1",
               "data.shuffle_buffer=16", "wandb.mode=disabled", "device=cpu", *overrides, timeout=300)
    return run_dir


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def logged_val(run_dir: Path) -> dict:
    (val,) = [r for r in rows(run_dir) if "val/count" in r]
    return val


def final_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / f"step-{STEPS:09d}.pt"


@pytest.fixture(scope="module")
def reference_run(shards, tmp_path_factory) -> Path:
    return train(REFERENCE, shards, tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def fast_run(shards, tmp_path_factory) -> Path:
    # torch.compile stays off here: inductor took 85 s for the first step and 36 s for the eval graph
    # on this 2-core CPU. bf16 autocast, channels_last, warmup, cosine, label smoothing all run.
    return train(FAST, shards, tmp_path_factory.mktemp("fast"), "model.compile=false")


@pytest.fixture(scope="module")
def modern_run(shards, tmp_path_factory) -> Path:
    # TrivialAugment, random erasing, Mixup/CutMix, label smoothing, the EMA, train at 200 and test at 224,
    # bf16 and channels_last: all of it runs on the CPU
    return train(MODERN, shards, tmp_path_factory.mktemp("modern"), "model.compile=false")


def test_reference_recipe_is_torchvisions_schedule_and_trains(reference_run: Path):
    cfg = config.load(REFERENCE)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr, cfg.optim.momentum) == (90, 256, 0.01, 0.9)
    assert (cfg.schedule.name, cfg.schedule.step_epochs, cfg.schedule.gamma) == ("step", 30, 0.1)
    assert (cfg.optim.weight_decay, cfg.amp, cfg.model.name) == (5e-4, "off", "alexnet")

    train_rows = [r for r in rows(reference_run) if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert [r["train/lr"] for r in train_rows] == [0.01] * 3  # first 30 epochs: no decay yet
    assert all(math.isfinite(r["train/loss"]) for r in train_rows)
    assert logged_val(reference_run)["val/count"] == VAL_IMAGES
    state = torch.load(final_checkpoint(reference_run), weights_only=True)
    assert state["step"] == STEPS and state["model"]["20.weight"].shape == (1000, 4096)


def test_fast_recipe_scales_the_lr_linearly_warms_up_and_trains_in_bf16(fast_run: Path):
    cfg = config.load(FAST)
    assert cfg.optim.lr == pytest.approx(0.01 * cfg.train.batch_size / 256)  # linear scaling rule
    assert cfg.train.batch_size > 256 and cfg.train.epochs < 90 and cfg.schedule.warmup_epochs > 0
    assert (cfg.schedule.name, cfg.train.label_smoothing) == ("cosine", 0.1)
    assert (cfg.amp, cfg.model.channels_last, cfg.model.compile) == ("bf16", True, True)

    # Warmup: step s (1-based) trains at lr * s / (warmup_epochs * steps_per_epoch).
    train_rows = [r for r in rows(fast_run) if "train/loss" in r]
    warmup_steps = cfg.schedule.warmup_epochs * STEPS_PER_EPOCH
    assert [r["train/lr"] for r in train_rows] == pytest.approx([cfg.optim.lr * s / warmup_steps for s in (1, 2, 3)])
    assert all(math.isfinite(r["train/loss"]) for r in train_rows)
    assert logged_val(fast_run)["val/count"] == VAL_IMAGES
    saved = torch.load(final_checkpoint(fast_run), weights_only=True)["config"]
    assert (saved["amp"], saved["model"]["channels_last"], saved["train"]["label_smoothing"]) == ("bf16", True, 0.1)


def evaluate(*args: str, nproc: int = 1) -> dict:
    launcher = ["torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m"] if nproc > 1 else []
    out = run_module(*launcher, "trainer.evaluate", *args, timeout=240).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_evaluate_on_two_processes_equals_what_the_run_logged(reference_run: Path):
    result = evaluate("--checkpoint", str(final_checkpoint(reference_run)), "data.workers=2", nproc=2)
    logged = logged_val(reference_run)
    assert result["world_size"] == 2 and result["step"] == STEPS
    # Every image counted once; per-image results equal; the loss sum differs only in summation order.
    assert (result["val/count"], result["val/top1"], result["val/top5"]) == \
        (logged["val/count"], logged["val/top1"], logged["val/top5"])
    assert result["val/loss"] == pytest.approx(logged["val/loss"], rel=1e-5)


def test_evaluate_under_bf16_and_channels_last_equals_what_the_run_logged(fast_run: Path):
    result = evaluate("--checkpoint", str(final_checkpoint(fast_run)))
    logged = logged_val(fast_run)
    assert result["world_size"] == 1
    assert {k: result[k] for k in logged if k.startswith("val/")} == {k: v for k, v in logged.items()
                                                                       if k.startswith("val/")}


def test_evaluate_names_a_bad_checkpoint(tmp_path: Path):
    bad = tmp_path / "step-000000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(AssertionError, match=rf"exited 2[\s\S]*error: checkpoint {re.escape(str(bad))}"):
        run_module("trainer.evaluate", "--checkpoint", str(bad))


def test_export_gives_the_checkpoints_logits(reference_run: Path, tmp_path: Path):
    out = tmp_path / "export" / "alexnet.pt"
    result = json.loads(run_module("trainer.export", "--checkpoint", str(final_checkpoint(reference_run)),
                                   "--out", str(out), timeout=240).stdout.strip().splitlines()[-1])
    assert result["check"]["max_abs_logit_diff"] == {"state_dict": 0.0, "program": 0.0}

    # Check it here too, on another batch size, from the files alone.
    state = torch.load(final_checkpoint(reference_run), weights_only=True)
    model = AlexNet(num_classes=1000).eval()
    model.load_state_dict(state["model"])
    exported_weights = torch.load(out, weights_only=True)
    assert exported_weights.keys() == state["model"].keys()
    assert all(torch.equal(exported_weights[k], state["model"][k]) for k in state["model"])
    program = torch.export.load(out.with_suffix(".pt2")).module()
    x = torch.randn(5, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-5)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert (meta["num_classes"], meta["image_size"], meta["step"]) == (1000, 224, STEPS)
    assert len(meta["class_names"]) == CLASSES


def test_modern_recipe_trains_with_its_scaled_lr_and_validates_the_ema(modern_run: Path):
    cfg = config.load(MODERN)
    # the linear scaling rule: optim.lr is for optim.lr_base_batch images, scaled to this run's batch of 8,
    # then warmed up over warmup_epochs
    base = cfg.optim.lr * BATCH / cfg.optim.lr_base_batch
    warmup_steps = cfg.schedule.warmup_epochs * STEPS_PER_EPOCH
    train_rows = [r for r in rows(modern_run) if "train/loss" in r]
    assert [r["train/lr"] for r in train_rows] == pytest.approx([base * s / warmup_steps for s in (1, 2, 3)])
    assert all(math.isfinite(r["train/loss"]) for r in train_rows)
    val = logged_val(modern_run)
    assert val["val/count"] == val["val_ema/count"] == VAL_IMAGES
    state = torch.load(final_checkpoint(modern_run), weights_only=True)
    assert state["ema"].keys() == state["model"].keys() and state["best_val_top1"] == max(val["val/top1"],
                                                                                          val["val_ema/top1"])


def test_evaluate_ema_at_the_test_resolution_equals_what_the_run_logged(modern_run: Path):
    result = evaluate("--checkpoint", str(final_checkpoint(modern_run)), "--ema")
    logged = logged_val(modern_run)
    assert result["ema"] is True and result["tta"] == "none"
    assert {k: result[k] for k in ("val/loss", "val/top1", "val/top5", "val/count")} == \
        {k: logged[k.replace("val/", "val_ema/")] for k in ("val/loss", "val/top1", "val/top5", "val/count")}
    assert len(result["val/per_class_top1"]) == 1000  # the recipe's model.num_classes
    assert sum(c is not None for c in result["val/per_class_top1"]) == CLASSES
    assert [w["count"] for w in result["val/worst_classes"]] == [VAL_PER_CLASS] * CLASSES


def test_evaluate_with_ten_crops_averages_over_ten_views(modern_run: Path):
    plain = evaluate("--checkpoint", str(final_checkpoint(modern_run)))
    ten = evaluate("--checkpoint", str(final_checkpoint(modern_run)), "--tta", "ten_crop")
    assert ten["tta"] == "ten_crop" and ten["val/count"] == plain["val/count"] == VAL_IMAGES
    assert ten["val/loss"] != plain["val/loss"]  # another prediction: the mean of 10 softmaxes


def test_ema_of_a_run_without_one_is_refused_naming_the_file(reference_run: Path):
    ckpt = final_checkpoint(reference_run)
    with pytest.raises(AssertionError, match=rf"exited 2[\s\S]*checkpoint {re.escape(str(ckpt))} holds no EMA weights"):
        run_module("trainer.evaluate", "--checkpoint", str(ckpt), "--ema")


def test_export_ema_writes_the_ema_weights(modern_run: Path, tmp_path: Path):
    out = tmp_path / "ema.pt"
    result = json.loads(run_module("trainer.export", "--checkpoint", str(final_checkpoint(modern_run)), "--ema",
                                   "--out", str(out), timeout=240).stdout.strip().splitlines()[-1])
    assert result["check"]["max_abs_logit_diff"] == {"state_dict": 0.0, "program": 0.0}
    ema = torch.load(final_checkpoint(modern_run), weights_only=True)["ema"]
    exported = torch.load(out, weights_only=True)
    assert all(torch.equal(exported[k], ema[k]) for k in ema)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert (meta["ema"], meta["image_size"], meta["eval_resize"]) == (True, 224, 232)
