"""data_prep and deep pixels: 16-bit PNGs and float TIFFs are scaled to 8 bits (not clipped to
white or black); what has no faithful mapping (NaN, 32-bit integers without a range) is rejected
with its reason in _info.json."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import simplejpeg

from data_prep.__main__ import main
from data_prep.encode import EncodeOptions, RejectImage, to_rgb_jpeg

from helpers.fixtures_imagenet import deep_pixels, float_tiff_bytes, image_folder, png16_bytes, read_shard_samples

PIX = deep_pixels()                 # 0.05..0.95, mean 0.52


def _gray(jpeg: bytes) -> np.ndarray:
    rgb = simplejpeg.decode_jpeg(jpeg).astype(float)
    assert rgb.shape == (40, 48, 3)
    return rgb.mean(2)


@pytest.mark.parametrize("data, want, repair, detail", [
    (png16_bytes(PIX * 65535), PIX * 255, "png 16-bit->jpeg", "0..65535 (16-bit range)"),
    # a dark 16-bit image stays dark: scaled by the declared range, not stretched to its own
    (png16_bytes(PIX * 6000), PIX * 6000 / 257, "png 16-bit->jpeg", "0..65535 (16-bit range)"),
    (float_tiff_bytes(PIX), PIX * 255, "tiff float->jpeg", "0..1 (0..1 convention)"),
    (float_tiff_bytes(PIX * 1000 - 300), (PIX - PIX.min()) / np.ptp(PIX) * 255, "tiff float->jpeg",
     "(observed)"),
    (float_tiff_bytes(PIX * 1000, {340: 0.0, 341: 2000.0}), PIX * 127.5, "tiff float->jpeg",
     "0..2000 (declared)"),
])
def test_deep_pixels_are_scaled_not_clipped(data, want, repair, detail):
    got = to_rgb_jpeg(data, EncodeOptions())
    gray = _gray(got.data)
    assert abs(gray.mean() - want.mean()) < 1.5
    assert np.abs(gray - want).mean() < 2.5          # every pixel, within JPEG error
    assert got.repair == repair and detail in got.detail


@pytest.mark.parametrize("data, reason", [
    (float_tiff_bytes(np.where(PIX > 0.9, np.nan, PIX)), "tiff F image: float pixels include NaN"),
    (float_tiff_bytes(np.full((40, 48), 7.0)), "constant float image (7) outside 0..1"),
])
def test_deep_pixels_without_a_faithful_mapping_are_rejected(data, reason):
    with pytest.raises(RejectImage) as e:
        to_rgb_jpeg(data, EncodeOptions())
    assert reason in str(e.value)


def test_prepared_shards_hold_the_scaled_pixels(tmp_path, capsys):
    """Through the CLI: the shard's JPEG keeps the picture's brightness; the manifest says how."""
    labels = image_folder(str(tmp_path / "train"), classes=2, per_class=3)
    cls = sorted(set(labels.values()))[1]
    files = {"deep16.png": png16_bytes(PIX * 65535), "deepf.tif": float_tiff_bytes(PIX),
             "deepnan.tif": float_tiff_bytes(np.where(PIX > 0.9, np.inf, PIX))}
    for name, data in files.items():
        (tmp_path / "train" / cls / name).write_bytes(data)
    out = str(tmp_path / "out")
    assert main(["folder", "--train", str(tmp_path / "train"), "--out", out, "--shard-size", "3",
                 "--workers", "1", "--no-progress"]) == 0
    samples = read_shard_samples(out, "train")
    assert len(samples) == 6 + 2
    for key in ("deep16", "deepf"):
        assert abs(_gray(samples[key]["jpg"]).mean() - PIX.mean() * 255) < 1.5   # ~132, not 255 or 0
        assert int(samples[key]["cls"]) == 1
    info = json.load(open(os.path.join(out, "_info.json")))
    assert {r["key"]: (r["repair"], r["detail"]) for r in info["repaired"]} == {
        "deep16": ("png 16-bit->jpeg", "0..65535 (16-bit range) scaled to 0..255"),
        "deepf": ("tiff float->jpeg", "0..1 (0..1 convention) scaled to 0..255")}
    assert [(r["key"], r["reason"]) for r in info["rejected"]] == [
        ("deepnan", "tiff F image: float pixels include NaN or infinity")]
    line = next(x for x in capsys.readouterr().out.splitlines() if "repaired:" in x)
    assert "repaired: 2 (" in line and "png 16-bit->jpeg: 1" in line and "tiff float->jpeg: 1" in line
