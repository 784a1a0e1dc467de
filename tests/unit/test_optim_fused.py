"""SGD's fused kernel (build_optimizer picks it on CUDA, where GradScaler then needs no host sync) gives the
weights of the foreach one on the project's parameter groups (weight decay on, biases off), with momentum
and nesterov, with and without GradScaler's loss scaling; torch runs fused SGD on the CPU too.
"""

from __future__ import annotations

import pytest
import torch

from trainer import optim
from trainer.config import ModelConfig, OptimConfig
from trainer.model import build_model, param_groups


def _train(fused: bool, nesterov: bool, scaled: bool) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="tiny_cnn"), 4)
    groups = param_groups(model, 5e-4)
    assert {g["weight_decay"] for g in groups} == {0.0, 5e-4}
    opt = torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=nesterov, fused=fused, foreach=not fused)
    scaler = torch.amp.GradScaler("cpu", enabled=scaled, init_scale=1024.0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        opt.zero_grad(set_to_none=True)
        scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("scaled", [False, True])
def test_fused_sgd_gives_the_foreach_weights(nesterov, scaled):
    fused, foreach = _train(True, nesterov, scaled), _train(False, nesterov, scaled)
    torch.manual_seed(0)
    start = [p.detach() for p in build_model(ModelConfig(name="tiny_cnn"), 4).parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(foreach, start))  # it trained
    for a, b in zip(fused, foreach):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_build_optimizer_fuses_only_on_cuda():
    model = build_model(ModelConfig(name="tiny_cnn"), 4)
    opt = optim.build_optimizer(OptimConfig(lr=0.1, momentum=0.9, nesterov=True), model)
    assert not opt.defaults["fused"]  # CPU parameters: the default (foreach) kernel
    if torch.cuda.is_available():
        assert optim.build_optimizer(OptimConfig(lr=0.1), model.cuda()).defaults["fused"]
