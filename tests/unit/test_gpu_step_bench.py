"""bench.gpu_step: training FLOPs leave out the first convolution's input gradient, the fast recipe's setting
comes first, and one failing setting records its error in its row while the others are still measured.
"""

from __future__ import annotations

import json

import pytest

from bench import gpu_step
from trainer.config import ModelConfig
from trainer.model import build_model, flops_per_image


def test_training_flops_skip_the_first_convolutions_input_gradient():
    model = build_model(ModelConfig(name="alexnet"), 1000)
    forward, train = gpu_step.train_flops_per_image(model, 224)
    assert forward == flops_per_image(model, 224)
    conv1 = 2 * 96 * 54 * 54 * 3 * 11 * 11  # 3 -> 96 channels, 11x11, stride 4, padding 1: 54 x 54 out at 224 px
    assert train == 3 * forward - conv1


def test_the_fast_recipes_setting_is_first_and_a_failure_keeps_the_table(monkeypatch, capsys):
    real = gpu_step.measure

    def flaky(s, args, device, flops_train):
        if s.amp == "off" and s.channels_last:
            raise RuntimeError("inductor: something broke\nmore detail")
        return real(s, args, device, flops_train)

    monkeypatch.setattr(gpu_step, "measure", flaky)
    gpu_step.main(["--device", "cpu", "--quick", "--no-compile", "--model", "tiny_cnn", "--image-size", "32",
                   "--batches", "2"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = report["rows"]
    assert (rows[0]["amp"], rows[0]["channels_last"], rows[0]["batch"]) == ("bf16", True, 2)
    failed = [r for r in rows if r["error"]]
    assert [r["error"] for r in failed] == ["RuntimeError: inductor: something broke"]
    assert all(r["img_s"] > 0 and r["measured_peak_fraction"] > 0 for r in rows if not r["error"])
    assert len(rows) - len(failed) >= 4 and report["measured_bf16_tflops"] > 0


@pytest.mark.parametrize("compile_too", [True, False])
def test_plan_measures_each_setting_once(compile_too):
    settings = gpu_step.plan([128, 256], 256, compile_too, quick=False)
    assert settings[0] == gpu_step.Setting(gpu_step.FAST_BATCH, "bf16", True, compile_too)
    assert len(settings) == len(set(settings))
