"""The seed AlexNet: exact parameter count and layer shapes, channels_last, the summary table."""

import torch
from torch import nn

from trainer.config import BUILTIN_MODELS, ModelConfig
from trainer.model import BUILTIN, AlexNet, AlexNetBN, build_model, count_parameters, flops_per_image, param_groups

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


# Forward FLOPs at 3x224x224, 2 per multiply-add, layer by layer (output sizes from the seed's table).
SEED_FLOPS_BY_LAYER = [
    2 * 96 * 54 * 54 * 3 * 11 * 11,   # conv1 11x11/4, pad 1: (224 + 2 - 11) // 4 + 1 = 54
    2 * 256 * 26 * 26 * 96 * 5 * 5,   # conv2 5x5, pad 2, on pool1's 26x26 ((54 - 3) // 2 + 1)
    2 * 384 * 12 * 12 * 256 * 3 * 3,  # conv3 3x3, pad 1, on pool2's 12x12 ((26 - 3) // 2 + 1)
    2 * 384 * 12 * 12 * 384 * 3 * 3,  # conv4
    2 * 256 * 12 * 12 * 384 * 3 * 3,  # conv5
    2 * 6400 * 4096,                  # fc6: pool3 gives 256 x 5 x 5 = 6400 features
    2 * 4096 * 4096,                  # fc7
    2 * 4096 * 1000,                  # fc8
]


def test_flop_count_matches_the_hand_count_of_the_layers():
    assert sum(SEED_FLOPS_BY_LAYER) == 2_019_891_456
    assert flops_per_image(AlexNet()) == sum(SEED_FLOPS_BY_LAYER)
    assert flops_per_image(AlexNetBN()) == sum(SEED_FLOPS_BY_LAYER)  # batch norm is not counted
    # torchvision publishes its AlexNet's cost as 0.714 G multiply-adds (AlexNet_Weights meta "_ops").
    tv_alexnet = build_model(ModelConfig(name="torchvision:alexnet"), 1000)
    assert round(flops_per_image(tv_alexnet) / 2 / 1e9, 3) == 0.714


def test_alexnet_bn_normalises_every_convolution_and_keeps_decay_off_norms():
    model = build_model(ModelConfig(name="alexnet_bn"), 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [n.num_features for n in norms] == [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert all(c.bias is None for c in convs)
    decay, no_decay = param_groups(model, 5e-4)
    assert len(decay["params"]) == 8  # 5 kernels + 3 weight matrices
    assert len(no_decay["params"]) == 2 * 5 + 3  # norm weights and biases, linear biases
    assert model.train()(torch.zeros(2, 3, 224, 224)).shape == (2, 10)
