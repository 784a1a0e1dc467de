"""data.decode=gpu's batched render (trainer/data/gpu_render.py) against the CPU path's pixels on the same
plans, on real JPEGs of several sizes, flips and reduced-decode plans included. The images are decoded by
the CPU path's own decoder at full size (nvJPEG's IDCT is another +-1 level; only a GPU can check that).

Tolerances, in 0-255 levels of the normalised output mapped back: plans the CPU path decodes at full size,
at most 1 (the CPU rounds to uint8, after its fixed-point resize; the GPU keeps floats). Reduced-decode
plans: the crop boxes are the CPU path's exactly, but a k x k box average stands in for libjpeg's 1/k DCT
scaling (nvJPEG has none): at most 0.75 levels on average per image, at most 10 at any pixel (at edges;
measured over 43 such plans: mean 0.37, worst pixel 8.1).
"""

from __future__ import annotations

import random

import pytest
import torch

from trainer.data import jpeg
from trainer.data.gpu_render import geometry, render_batch
from trainer.data.transforms import EvalPreset, TrainPreset

from helpers.images import levels, photo

ROUNDOFF = 1e-3  # float32 normalising and mapping back
SIZES = [(60, 80), (80, 60), (90, 70), (375, 500), (500, 375), (300, 260), (161, 333)]


def _render(preset, jpegs, draws: int, chunk_elements: int = 1 << 26):
    full, rows, cpu = [], [], []
    for n, data in enumerate(jpegs):
        for i in range(draws):
            plan, h, w = preset.plan(data, random.Random(100 * n + i))
            full.append(torch.from_numpy(jpeg.decode(data, h, w)).permute(2, 0, 1))
            rows.append(geometry(plan, h, w, preset.margin))
            cpu.append(preset(data, random.Random(100 * n + i)).float())
    out = render_batch(full, torch.tensor(rows), preset.size, chunk_elements=chunk_elements)
    return out, torch.stack(cpu), torch.tensor(rows)


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return [photo(h, w, seed=h * w, subsampling="444" if n % 2 else "420") for n, (h, w) in enumerate(SIZES)]


@pytest.mark.parametrize("preset", [TrainPreset(32), EvalPreset(32, 36), TrainPreset(64), EvalPreset(56, 64)],
                         ids=lambda p: f"{type(p).__name__}{p.size}")
def test_pixels_match_the_cpu_path(jpegs, preset):
    out, cpu, rows = _render(preset, jpegs, 4 if isinstance(preset, TrainPreset) else 1)
    assert out.dtype == torch.float32 and out.shape == cpu.shape
    diff = (levels(out) - cpu).abs()
    worst, mean = diff.amax(dim=(1, 2, 3)), diff.mean(dim=(1, 2, 3))
    full, reduced = rows[:, 4] == 1, rows[:, 4] > 1
    assert full.any() and reduced.any()  # both kinds of plan are checked
    assert worst[full].max() <= 1.0 + ROUNDOFF, worst[full]
    assert worst[reduced].max() <= 10.0 and mean[reduced].max() <= 0.75, (worst[reduced], mean[reduced])
    if isinstance(preset, TrainPreset):
        assert rows[:, 9].any() and not rows[:, 9].all()  # flipped and unflipped


def test_a_full_size_crop_at_224(jpegs):
    out, cpu, rows = _render(TrainPreset(224), jpegs[3:5], 3)
    assert (levels(out) - cpu).abs().max() <= 1.0 + ROUNDOFF and (rows[:, 4] == 1).all()


def test_chunks_change_nothing_and_keep_the_order(jpegs):
    preset = TrainPreset(32)
    whole, _, _ = _render(preset, jpegs[:3], 2)
    chunked, _, _ = _render(preset, jpegs[:3], 2, chunk_elements=3 * 90 * 90)  # each image alone
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=0)


@pytest.mark.parametrize("channels_last", [True, False])
def test_memory_format(jpegs, channels_last):
    data = jpegs[0]
    plan, h, w = TrainPreset(32).plan(data, random.Random(0))
    image = torch.from_numpy(jpeg.decode(data, h, w)).permute(2, 0, 1)
    out = render_batch([image], torch.tensor([geometry(plan, h, w, 2.0)]), 32, channels_last=channels_last)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_normalize_passes_the_gpu_paths_float_batch_through(jpegs):
    """The loop calls Normalize on every batch: a data.decode=gpu batch is normalised already."""
    from trainer.data.transforms import Normalize

    data = jpegs[0]
    plan, h, w = TrainPreset(32).plan(data, random.Random(0))
    image = torch.from_numpy(jpeg.decode(data, h, w)).permute(2, 0, 1)
    out = render_batch([image], torch.tensor([geometry(plan, h, w, 2.0)]), 32)
    again = Normalize(torch.device("cpu"), channels_last=False)(out)
    assert torch.equal(again, out) and again.is_contiguous()
    assert Normalize(torch.device("cpu"), channels_last=True)(out) is out  # nothing to do: no copy
