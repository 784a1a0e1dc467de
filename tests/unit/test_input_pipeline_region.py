"""Region decoding (trainer/data/_jpeg_region.c) against whole-image decoding: the same pixels for any crop, scale,
subsampling and flip; corrupt and truncated files refused; the presets' output unchanged by it (the train
preset against the GPU path's `render` of a whole decode, the eval preset's top-left window against a
whole-image resize) and by the fallback that decodes whole images where the extension is missing.
"""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import simplejpeg
import torch
from PIL import Image

from trainer.data import jpeg
from trainer.data.transforms import EvalPreset, TrainPreset, dct_reduction, render

from helpers.images import photo


def test_the_extension_is_built():
    """`pip install -e .` builds trainer/_jpeg_region with the system's libjpeg-turbo (Debian: libjpeg-dev)."""
    from trainer.data import _jpeg_region  # noqa: F401 - an ImportError here names what is missing


def region(data: bytes, reduction: int, top: int, left: int, h: int, w: int, flip: bool = False) -> np.ndarray:
    from trainer.data._jpeg_region import decode_region

    out = np.empty((h, w, 3), np.uint8)
    decode_region(data, out, reduction, top, left, flip)
    return out.astype(np.int32)


@pytest.mark.parametrize("subsampling", ["420", "422", "444", "gray", "progressive"])
def test_a_region_equals_the_same_crop_of_a_whole_decode(subsampling):
    if subsampling == "gray":
        data = simplejpeg.encode_jpeg(np.asarray(Image.open(io.BytesIO(photo(301, 457, 9))).convert("L"))[..., None],
                                      colorspace="GRAY")
    elif subsampling == "progressive":
        buf = io.BytesIO()
        Image.open(io.BytesIO(photo(301, 457, 9))).save(buf, "JPEG", quality=90, progressive=True)
        data = buf.getvalue()
    else:
        data = photo(301, 457, 9, subsampling)
    rng = random.Random(0)
    for reduction in (1, 2, 4, 8):
        full = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-301 // reduction),
                                      min_width=-(-457 // reduction)).astype(np.int32)
        rows, cols = full.shape[:2]
        boxes = [(0, 0, rows, cols), (0, 0, 1, 1), (rows - 1, cols - 1, 1, 1)]  # whole, corners
        boxes += [(16 // reduction, 32 // reduction, rows // 2, cols // 2)]  # on iMCU boundaries
        for _ in range(20):
            h, w = rng.randint(1, rows), rng.randint(1, cols)
            boxes.append((rng.randint(0, rows - h), rng.randint(0, cols - w), h, w))
        for top, left, h, w in boxes:
            want = full[top:top + h, left:left + w]
            got = region(data, reduction, top, left, h, w)
            # The same libjpeg-turbo arithmetic; its edge columns are decoded with their neighbours, so the
            # chroma upsampling sees what a whole decode sees (without that: up to 39 levels off there).
            assert np.abs(got - want).max() <= 1 and np.abs(got - want).mean() < 0.01, (reduction, top, left, h, w)
            assert np.array_equal(region(data, reduction, top, left, h, w, flip=True), got[:, ::-1])


def test_truncated_corrupt_and_foreign_bytes_are_refused():
    from trainer.data._jpeg_region import decode_region

    data = photo(256, 320, 4)
    out = np.empty((32, 32, 3), np.uint8)
    decode_region(data, out, 1, 0, 0, False)  # the top-left corner of the whole file decodes
    for bad, why in [(data[: len(data) * 2 // 3], "truncated"),  # its crop lies above the cut
                     (data[:200] + bytes(len(data) - 200), None),  # entropy data zeroed
                     (b"not a jpeg at all", None),
                     (simplejpeg.encode_jpeg(np.zeros((64, 64, 3), np.uint8))[:300], None)]:
        with pytest.raises(ValueError, match=why):
            decode_region(bad, out, 1, 0, 0, False)
    cmyk = io.BytesIO()
    Image.new("CMYK", (64, 64), (10, 20, 30, 40)).save(cmyk, "JPEG")
    with pytest.raises(ValueError, match="not a YCbCr, RGB or greyscale"):  # the preset falls back to PIL
        decode_region(cmyk.getvalue(), out, 1, 0, 0, False)
    with pytest.raises(ValueError, match="outside"):
        decode_region(data, out, 1, 240, 0, False)
    with pytest.raises(ValueError, match="uint8 buffer"):
        decode_region(data, np.empty((32, 32, 4), np.uint8), 1, 0, 0, False)
    assert TrainPreset(32)(cmyk.getvalue(), random.Random(0)).shape == (3, 32, 32)


@pytest.mark.parametrize("height,width", [(375, 500), (256, 341), (1100, 1300), (200, 150)])
def test_train_preset_equals_render_of_a_whole_decode(height, width):
    """Region decode + resize into the batch slot gives the pixels of the whole-image path (data.decode=gpu's
    `render`, run on the CPU), flips included."""
    data = photo(height, width, seed=height + width)
    preset = TrainPreset(224)
    for i in range(12):
        plan, h, w = preset.plan(data, random.Random(i))
        k = dct_reduction(plan, preset.margin)
        whole = torch.from_numpy(jpeg.decode(data, h, w, k)).permute(2, 0, 1)[None]
        want = render(whole, plan, 224, h, w)[0]
        assert torch.equal(preset(data, random.Random(i)), want), (i, plan)


# (150, 91) at 232/232, the ten-crop square: upscaled, its short side's scale x 91 is 231.99999999999997
@pytest.mark.parametrize("height,width", [(375, 500), (500, 375), (256, 341), (1100, 1300), (300, 301), (224, 900),
                                          (150, 91)])
@pytest.mark.parametrize("size,resize", [(224, 256), (224, 224), (32, 36), (232, 232)])
def test_eval_window_equals_a_whole_image_resize(height, width, size, resize):
    """The eval preset decodes and resizes only the rows and columns up to the centre crop's far edges; the
    pixels are those of resizing the whole image, then cropping (torchvision's order)."""
    data = photo(height, width, seed=3)
    preset = EvalPreset(size, resize)
    plan, h, w = preset.plan(data)
    k = dct_reduction(plan, preset.margin)
    whole = torch.from_numpy(jpeg.decode(data, h, w, k)).permute(2, 0, 1)[None]
    want = render(whole, plan, size, h, w)[0]
    got = preset(data)
    # the window is resized with the whole image's scale, given as a factor: its last bit may differ
    assert (got.int() - want.int()).abs().max() <= 1 and (got != want).float().mean() < 0.01


def test_without_the_extension_the_presets_decode_whole_images_alike(monkeypatch):
    jpegs = [photo(375, 500, 1), photo(1100, 1300, 2), photo(256, 341, 3, "444")]
    presets = [TrainPreset(224), EvalPreset(224, 256)]
    with_ext = [p(j, random.Random(i)) for i, j in enumerate(jpegs) for p in presets]
    monkeypatch.setattr(jpeg, "_decode_region", None)
    without = [p(j, random.Random(i)) for i, j in enumerate(jpegs) for p in presets]
    for a, b in zip(with_ext, without):
        assert (a.int() - b.int()).abs().max() <= 1


def test_a_header_claiming_a_huge_image_is_refused_before_any_allocation():
    data = bytearray(photo(64, 64, 1))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length (2), precision (1), height (2), width (2)
    data[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2
    with pytest.raises(ValueError, match=f"more than {jpeg.MAX_PIXELS} pixels"):
        TrainPreset(224)(bytes(data), random.Random(0))
