"""Hand-made answers for the recipe options of trainer/optim.py: a LARS step (and LARC's clip) against the
formula of You et al. 2017, an AdamW step, optimizer state through a state_dict, the poly and onecycle
schedule tables and the linear scaling rule.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainer import config, optim
from trainer.config import OptimConfig, ScheduleConfig
from trainer.errors import ConfigError

W0, B0 = [3.0, 4.0], 1.0  # |w| = 5
GW, GB = [0.6, 0.8], 2.0  # |g_w| = 1


def two_parameter_model() -> torch.nn.Linear:
    """A weight (1x2, the decayed and adapted group) and a bias (the weight-decay-0 group), in float64."""
    model = torch.nn.Linear(2, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([W0]))
        model.bias.fill_(B0)
    return model


def set_grads(model: torch.nn.Linear) -> None:
    model.weight.grad = torch.tensor([GW], dtype=torch.float64)
    model.bias.grad = torch.tensor([GB], dtype=torch.float64)


def lars_by_hand(steps: int, lr: float, wd: float, eta: float, momentum: float, clip: bool):
    """LARS: d = eta |w| / (|g| + wd |w|) (g + wd w); with LARC the ratio is min(ratio / lr, 1); momentum buffer
    on d; w -= lr buf. The bias: plain SGD with momentum, no decay."""
    w, b, buf_w, buf_b = list(W0), B0, None, None
    for _ in range(steps):
        norm_w, norm_g = math.hypot(*w), math.hypot(*GW)
        ratio = eta * norm_w / (norm_g + wd * norm_w + 1e-8)
        if clip:
            ratio = min(ratio / lr, 1.0)
        d = [(g + wd * x) * ratio for g, x in zip(GW, w)]
        buf_w = d if buf_w is None else [momentum * m + x for m, x in zip(buf_w, d)]
        buf_b = GB if buf_b is None else momentum * buf_b + GB
        w = [x - lr * m for x, m in zip(w, buf_w)]
        b = b - lr * buf_b
    return w, b


@pytest.mark.parametrize("lr, clip", [(0.1, False), (0.1, True), (0.001, True)])
def test_lars_steps_follow_the_formula_and_leave_the_bias_unadapted(lr: float, clip: bool):
    model = two_parameter_model()
    cfg = OptimConfig(name="lars", lr=lr, momentum=0.9, weight_decay=0.01, trust_coeff=0.001, lars_clip=clip)
    opt = optim.build_optimizer(cfg, model)
    for _ in range(3):
        set_grads(model)
        opt.step()
    w, b = lars_by_hand(3, lr, 0.01, 0.001, 0.9, clip)
    assert model.weight.detach()[0].tolist() == pytest.approx(w, rel=1e-12, abs=0)
    assert model.bias.item() == pytest.approx(b, rel=1e-12, abs=0)
    # hand check of the first step at lr 0.1 without LARC: ratio = 0.001 x 5 / 1.05
    if lr == 0.1 and not clip:
        first = [W0[i] - 0.1 * (GW[i] + 0.01 * W0[i]) * 0.005 / 1.05 for i in range(2)]
        assert lars_by_hand(1, lr, 0.01, 0.001, 0.9, False)[0] == pytest.approx(first, rel=1e-9)


def test_larc_at_a_small_lr_clips_to_plain_sgd():
    """ratio / lr = 0.00476 / 0.001 > 1, so LARC's clip leaves d = g + wd w: one plain SGD step."""
    model = two_parameter_model()
    opt = optim.build_optimizer(OptimConfig(name="lars", lr=0.001, weight_decay=0.01, lars_clip=True), model)
    set_grads(model)
    opt.step()
    want = [x - 0.001 * (g + 0.01 * x) for x, g in zip(W0, GW)]
    assert model.weight.detach()[0].tolist() == pytest.approx(want, rel=1e-12)


def test_adamw_first_step_is_a_signed_lr_step_with_decoupled_decay_off_the_bias():
    model = two_parameter_model()
    opt = optim.build_optimizer(OptimConfig(name="adamw", lr=0.01, weight_decay=0.05, momentum=0.9), model)
    set_grads(model)
    opt.step()
    # step 1: m_hat = g, v_hat = g^2, so the update is lr g / (|g| + eps); decay multiplies w by 1 - lr wd first
    want = [x * (1 - 0.01 * 0.05) - 0.01 * g / (abs(g) + 1e-8) for x, g in zip(W0, GW)]
    assert model.weight.detach()[0].tolist() == pytest.approx(want, rel=1e-12)
    assert model.bias.item() == pytest.approx(B0 - 0.01 * GB / (GB + 1e-8), rel=1e-12)


@pytest.mark.parametrize("name", ["lars", "adamw"])
def test_optimizer_state_round_trips_through_a_state_dict_bitwise(name: str):
    cfg = OptimConfig(name=name, lr=0.1, weight_decay=0.01)
    straight = two_parameter_model()
    opt = optim.build_optimizer(cfg, straight)
    for _ in range(2):
        set_grads(straight)
        opt.step()
    saved_model = {k: v.clone() for k, v in straight.state_dict().items()}
    saved = torch.load(_bytes(opt.state_dict()), weights_only=True)  # as a checkpoint stores it
    resumed = two_parameter_model()
    resumed.load_state_dict(saved_model)
    opt2 = optim.build_optimizer(cfg, resumed)
    opt2.load_state_dict(saved)
    for model, o in ((straight, opt), (resumed, opt2)):
        for _ in range(2):
            set_grads(model)
            o.step()
    assert torch.equal(straight.weight, resumed.weight) and torch.equal(straight.bias, resumed.bias)


def _bytes(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


SPE, TOTAL, LR = 10, 100, 0.4


@pytest.mark.parametrize("schedule, table", [
    (ScheduleConfig(name="poly", power=2, warmup_epochs=2), {
        0: 0.02, 19: 0.4, 20: 0.4, 60: 0.1, 80: 0.025, 100: 0.0}),  # (1 - t)^2 over the 80 steps after warmup
    (ScheduleConfig(name="poly", power=1), {0: 0.4, 50: 0.2, 75: 0.1, 100: 0.0, 120: 0.0}),  # linear decay
    (ScheduleConfig(name="poly", power=2, min_lr=0.1), {0: 0.4, 50: 0.175, 100: 0.1}),
    (ScheduleConfig(name="onecycle", peak_epochs=2), {
        0: 0.02, 9: 0.2, 19: 0.4, 20: 0.4, 60: 0.2, 90: 0.05, 100: 0.0}),  # up over 20 steps, down over 80
    (ScheduleConfig(name="onecycle", peak_epochs=5, min_lr=0.1), {4: 0.04, 49: 0.4, 50: 0.4, 75: 0.25, 100: 0.1}),
])
def test_poly_and_onecycle_match_the_table(schedule: ScheduleConfig, table: dict[int, float]):
    for s, want in table.items():
        got = optim.lr_at(s, SPE, TOTAL, LR, schedule)
        assert got == pytest.approx(want, abs=1e-12), f"{schedule.name}: step {s} has lr {got}, expected {want}"


@pytest.mark.parametrize("lr, base, batch, want", [
    (0.1, 256, 8192, 3.2),  # Goyal et al.: 0.1 per 256 images
    (0.1, 256, 256, 0.1),
    (0.02, 0, 8192, 0.02),  # 0: off, optim.lr as given
    (2.0, 512, 1024, 4.0),
])
def test_linear_scaling_rule(lr: float, base: int, batch: int, want: float):
    assert optim.scaled_lr(OptimConfig(lr=lr, lr_base_batch=base), batch) == pytest.approx(want, rel=1e-15)


@pytest.mark.parametrize("overrides, key", [
    (["optim.lars_clip=true"], "optim.lars_clip"),
    (["optim.name=adamw", "optim.nesterov=true"], "optim.nesterov"),
    (["optim.name=lars", "optim.momentum=0", "optim.nesterov=true"], "optim.nesterov"),
    (["optim.name=lars", "optim.trust_coeff=0"], "optim.trust_coeff"),
    (["optim.adam_beta2=0.99"], "optim.adam_beta1/adam_beta2"),
    (["optim.lr_base_batch=-1"], "optim.lr_base_batch"),
    (["schedule.name=onecycle", "schedule.warmup_epochs=1"], "schedule.warmup_epochs"),
    (["schedule.name=onecycle", "schedule.peak_epochs=90"], "schedule.peak_epochs"),
    (["schedule.name=poly", "schedule.power=0"], "schedule.power"),
])
def test_misused_optimizer_and_schedule_keys_are_refused_by_name(overrides: list[str], key: str):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(None, overrides)
