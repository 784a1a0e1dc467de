"""data_prep.encode: good JPEGs pass through untouched, --max-short-side shrinks only large
images, bad files are converted or rejected with a reason, output is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import simplejpeg

from data_prep.encode import EncodeOptions, RejectImage, to_rgb_jpeg

from helpers.fixtures_imagenet import cmyk_jpeg, gray_jpeg, jpeg, png_bytes, truncated_jpeg


def test_valid_jpeg_bytes_are_kept():
    data = jpeg(1, 3, 0, (60, 90))
    got = to_rgb_jpeg(data, EncodeOptions())
    assert got.data == data and got.repair is None and not got.resized


def test_max_short_side_resizes_only_larger_images():
    small, big = jpeg(0, 3, 1, (50, 70)), jpeg(0, 3, 2, (120, 200))
    opts = EncodeOptions(max_short_side=64, quality=80)
    assert to_rgb_jpeg(small, opts).data == small
    out = to_rgb_jpeg(big, opts)
    assert out.resized and simplejpeg.decode_jpeg(out.data).shape == (64, 107, 3)
    assert to_rgb_jpeg(big, opts).data == out.data          # deterministic


@pytest.mark.parametrize("make, repair", [(cmyk_jpeg, "cmyk->rgb"), (gray_jpeg, "grayscale->rgb"),
                                          (png_bytes, "png->jpeg")])
def test_bad_formats_become_rgb_jpegs(make, repair):
    out = to_rgb_jpeg(make(), EncodeOptions())
    assert out.repair == repair
    h, w, colorspace, _ = simplejpeg.decode_jpeg_header(out.data)
    assert (h, w, colorspace) == (40, 48, "YCbCr")


@pytest.mark.parametrize("data, reason", [
    (truncated_jpeg(), "truncated"),
    (b"\xff\xd8\xff\xe0 not really a jpeg", "undecodable"),
    (b"GIF89a garbage", "undecodable"),
    (b"", "empty"),
])
def test_broken_files_are_rejected_with_a_reason(data, reason):
    with pytest.raises(RejectImage, match=f"(?i){reason}"):
        to_rgb_jpeg(data, EncodeOptions())


def test_pixel_limit_rejects_before_decoding():
    with pytest.raises(RejectImage, match="too many pixels"):
        to_rgb_jpeg(jpeg(0, 2, 3, (100, 100)), EncodeOptions(max_pixels=9999))
    with pytest.raises(RejectImage, match="too many pixels"):
        to_rgb_jpeg(png_bytes((100, 100)), EncodeOptions(max_pixels=9999))


def test_jpeg_truncated_after_header_is_rejected():
    data = jpeg(0, 2, 4, (200, 200))
    cut = data[: int(len(data) * 0.8)]
    with pytest.raises(RejectImage, match="(?i)truncated|premature"):
        to_rgb_jpeg(cut, EncodeOptions())
    assert np.asarray(simplejpeg.decode_jpeg(data)).shape == (200, 200, 3)
