"""Models by name: the seed AlexNet (the default), an AlexNet with batch norm, a tiny CNN for smoke runs,
any torchvision classifier.

The seed AlexNet is the Dive-into-Deep-Learning variant on 3x224x224 input: exactly 50,844,008
parameters with 1000 classes. Parameter groups keep weight decay off biases and other 1-D tensors.
`flops_per_image` counts a forward pass's multiply-adds, for throughput as a fraction of peak.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from trainer.config import ModelConfig
from trainer.errors import ConfigError


class AlexNet(nn.Sequential):
    """The seed's AlexNet, layer for layer (flatten instead of view, so channels_last works)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__(
            nn.Conv2d(3, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Flatten(),
            nn.Linear(6400, 4096), nn.ReLU(inplace=True), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        init_xavier(self)


def init_xavier(model: nn.Module) -> None:
    """The seed's initialisation (d2l's init_cnn): Xavier-uniform weights, zero biases. PyTorch's
    default init leaves this 8-layer ReLU net without normalisation stuck at chance for many steps."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _conv_bn(c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    # No conv bias: the batch norm's shift replaces it.
    return [nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class AlexNetBN(nn.Sequential):
    """The seed's layer shapes with BatchNorm2d after every convolution (before its ReLU).

    Batch norm makes the net tolerate larger learning rates, hence larger global batches; the
    classifier keeps the seed's dropout. Same convolution and linear FLOPs as the seed.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__(
            *_conv_bn(3, 96, 11, stride=4, padding=1), nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv_bn(96, 256, 5, padding=2), nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv_bn(256, 384, 3, padding=1),
            *_conv_bn(384, 384, 3, padding=1),
            *_conv_bn(384, 256, 3, padding=1), nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Flatten(),
            nn.Linear(6400, 4096), nn.ReLU(inplace=True), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )


class TinyCNN(nn.Sequential):
    """Three stride-2 conv-BN-ReLU blocks, global max pooling, dropout, one linear layer (~24k parameters),
    for smoke runs and the process tests: any input size, a few milliseconds a step at 32 px on a CPU,
    no torchvision import, and batch norm and dropout, whose running statistics and masks a resume must
    restore exactly."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__(
            *_conv_bn(3, 16, 3, stride=2, padding=1), *_conv_bn(16, 32, 3, stride=2, padding=1),
            *_conv_bn(32, 64, 3, stride=2, padding=1),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(p=dropout), nn.Linear(64, num_classes),
        )


BUILTIN = {"alexnet": AlexNet, "alexnet_bn": AlexNetBN, "tiny_cnn": TinyCNN}  # config.BUILTIN_MODELS names them


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The model named by `cfg.name` (checked by ModelConfig), with freshly initialised weights."""
    if cfg.name in BUILTIN:
        return BUILTIN[cfg.name](num_classes, cfg.dropout)
    import torchvision

    name = cfg.name.removeprefix("torchvision:")
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ConfigError(f"model.name={cfg.name}: torchvision has no classification model {name!r}")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


@torch.no_grad()
def check_input_size(cfg: ModelConfig, num_classes: int, image_size: int, key: str = "data.image_size") -> None:
    """Raise a ConfigError naming `key` (data.image_size, or the evaluation crop's key) when the model cannot
    take that input, rather than failing at the first step. Built and run on the meta device: shapes only,
    no memory, no compute."""
    with torch.device("meta"):
        model = build_model(cfg, num_classes).eval()
    try:
        model(torch.zeros(1, 3, image_size, image_size, device="meta"))
    except RuntimeError as e:
        raise ConfigError(f"{key}={image_size} does not fit model.name={cfg.name} ({e}); the seed "
                          "AlexNets take 224 only (their classifier expects 256x5x5 features)") from e


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups: weight decay on weight matrices and kernels, none on biases and norms."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def maybe_compile(model: nn.Module, compile: bool) -> nn.Module:
    """`torch.compile(model)` when `compile` (model.compile), else the model itself."""
    return cast(nn.Module, torch.compile(model)) if compile else model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = next((m for m in (getattr(model, "module", None), getattr(model, "_orig_mod", None))
                      if isinstance(m, nn.Module)), None)  # not `or`: an empty Sequential is falsy
        if inner is None:
            return model
        model = inner


def use_compile_cache(directory: Path) -> None:
    """Keep torch.compile's caches (Inductor's FX graphs and kernels, Triton's binaries) in `directory`,
    e.g. under run.dir, so that a restart of the run, on this node or another one sharing the
    filesystem, reuses them instead of compiling from scratch. A TORCHINDUCTOR_CACHE_DIR the user set wins.
    """
    # Inductor writes its default (a folder in /tmp, gone on another node) into the environment when
    # it first looks, so "set" alone does not mean the user chose it.
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, os.path.abspath(default_cache_dir())):
        directory.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory.resolve())
        os.environ.setdefault("TRITON_CACHE_DIR", str(directory.resolve() / "triton"))


def to_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    return model.to(memory_format=torch.channels_last) if channels_last else model


@torch.no_grad()
def flops_per_image(model: nn.Module, image_size: int = 224) -> int:
    """Forward-pass FLOPs for one 3 x image_size x image_size image, counting 2 per multiply-add.

    Only convolutions and matrix products count (torch's FlopCounterMode): a convolution is
    2 * C_out * H_out * W_out * (C_in / groups) * k_h * k_w, a linear layer 2 * in * out. Biases,
    ReLU, pooling and batch norm are left out (under 1% for AlexNet), as is usual for MFU figures.
    Runs one image through `model` (the uncompiled module) in eval mode on its own device.
    """
    was_training = model.training
    param = next(model.parameters())
    x = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()
