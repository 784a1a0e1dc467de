"""A grid of training inputs, each captioned with its class name: what the augmentation produces.

Drawn with PIL on the uint8 batch the loader yields (before normalisation), so it costs a few
milliseconds once per start and shows exactly what the model is fed.
"""

from __future__ import annotations

import math

import torch
from PIL import Image, ImageDraw

LABEL_HEIGHT = 14  # pixels under each tile for its class name (PIL's default bitmap font)
MIN_TILE = 128  # smaller images are enlarged (nearest) so that a class name fits under them


def sample_grid(images: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...], count: int) -> Image.Image:
    """The first `count` images of an NCHW uint8 batch in a near-square grid, class names underneath."""
    n = min(count, images.shape[0])
    if n == 0:
        raise ValueError("sample_grid needs at least one image")
    zoom = math.ceil(MIN_TILE / images.shape[3])
    height, width = images.shape[2] * zoom, images.shape[3] * zoom
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = Image.new("RGB", (cols * width, rows * (height + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(canvas)
    pixels = images[:n].detach().to("cpu", torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    for i in range(n):
        x, y = (i % cols) * width, (i // cols) * (height + LABEL_HEIGHT)
        canvas.paste(Image.fromarray(pixels[i]).resize((width, height), Image.Resampling.NEAREST), (x, y))
        draw.text((x + 2, y + height + 1), _fit(draw, _name(int(labels[i]), class_names), width - 4), fill="black")
    return canvas


def _name(label: int, class_names: tuple[str, ...]) -> str:
    # ImageNet names list synonyms ("tench, Tinca tinca"): the first one is enough on a thumbnail.
    name = class_names[label] if 0 <= label < len(class_names) else f"class {label}"
    return f"{label}: {name.split(',')[0]}"


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    while text and draw.textlength(text) > width:
        text = text[:-1]
    return text
