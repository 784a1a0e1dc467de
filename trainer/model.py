"""Models by name: the seed AlexNet (the default) and any torchvision classifier.

The seed AlexNet is the Dive-into-Deep-Learning variant on 3x224x224 input: exactly 50,844,008
parameters with 1000 classes. Parameter groups keep weight decay off biases and other 1-D tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.config import ModelConfig


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


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The model named by `cfg.name`, with freshly initialised weights."""
    if cfg.name == "alexnet":
        return AlexNet(num_classes, cfg.dropout)
    if cfg.name.startswith("torchvision:"):
        import torchvision

        name = cfg.name.removeprefix("torchvision:")
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"model.name={cfg.name}: torchvision has no classification model {name!r}")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    raise ValueError(f"model.name={cfg.name!r} is unknown: use 'alexnet' or 'torchvision:<name>'")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimizer groups: weight decay on weight matrices and kernels, none on biases and norms."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def to_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    return model.to(memory_format=torch.channels_last) if channels_last else model
