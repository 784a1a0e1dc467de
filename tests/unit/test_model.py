"""The seed AlexNet: exact parameter count and layer shapes, channels_last, the summary table."""

import torch
from torch import nn

from trainer.config import BUILTIN_MODELS, ModelConfig
from trainer.model import BUILTIN, AlexNet, build_model, count_parameters, param_groups

from helpers.common import run_module

# The seed's torchsummary table: conv/pool/linear outputs at 3x224x224.
SEED_SHAPES = [
    (96, 54, 54), (96, 26, 26), (256, 26, 26), (256, 12, 12), (384, 12, 12), (384, 12, 12),
    (256, 12, 12), (256, 5, 5), (4096,), (4096,), (1000,),
]


def _layer_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.Linear))]
    model(x)
    for h in hooks:
        h.remove()
    return shapes


def test_parameter_count_and_layer_shapes_match_the_seed():
    model = AlexNet()
    assert count_parameters(model) == 50_844_008
    with torch.no_grad():
        assert _layer_shapes(model.eval(), torch.zeros(2, 3, 224, 224)) == SEED_SHAPES


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    model = AlexNet(num_classes=10).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_no_weight_decay_on_biases():
    decay, no_decay = param_groups(AlexNet(), 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) == 8 and all(p.ndim >= 2 for p in decay["params"])
    assert len(no_decay["params"]) == 8 and all(p.ndim == 1 for p in no_decay["params"])


def test_registry_builds_torchvision_models_by_name():
    model = build_model(ModelConfig(name="torchvision:resnet18"), num_classes=7)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 7)


def test_every_builtin_name_builds_and_tiny_cnn_takes_any_size():
    assert tuple(BUILTIN) == BUILTIN_MODELS  # the torch-free config checks names against this list
    tiny = build_model(ModelConfig(name="tiny_cnn"), num_classes=5).eval()
    assert [tiny(torch.zeros(2, 3, s, s)).shape for s in (32, 57)] == [(2, 5), (2, 5)]
    assert count_parameters(tiny) == 23_472 + 224 + 64 * 5 + 5  # convs, batch norms, classifier
    assert any(isinstance(m, nn.BatchNorm2d) for m in tiny.modules())
    assert any(isinstance(m, nn.Dropout) for m in tiny.modules())  # both must resume exactly


def test_summary_prints_the_layer_table():
    out = run_module("trainer.summary").stdout
    assert "Total params: 50,844,008" in out
    assert "[1, 96, 54, 54]" in out and "[1, 256, 5, 5]" in out
    assert "Params size (MB): 203.38" in out
