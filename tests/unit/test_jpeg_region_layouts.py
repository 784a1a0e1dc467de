"""The region decoder on JPEGs of every layout (bench/jpeg_layouts.py: sampling x baseline/progressive/
arithmetic x odd sizes): a region equals the same box of the extension's own whole decode, bit for bit, at
every scale, on random boxes and on the last row and column; integers out of range are refused, never
wrapped; files past the scan, work and pixel limits are refused quickly; corrupt data is not retried by a
lenient decoder.
"""

from __future__ import annotations

import io
import random
import time

import numpy as np
import pytest
import torch
from PIL import Image

from bench import jpeg_layouts
from bench.fuzz_decode import boxes
from data_prep import jpeg_check
from trainer.data import _jpeg_region, jpeg
from trainer.data._jpeg_region import decode_region

from helpers.images import photo


@pytest.fixture(scope="module")
def writer(tmp_path_factory):
    return jpeg_layouts.Writer(tmp_path_factory.getbasetemp() / "jpeg_layouts")


def decode(data: bytes, k: int, top: int, left: int, h: int, w: int, flip: bool = False, **kw) -> np.ndarray:
    out = np.empty((h, w, 3), np.uint8)
    decode_region(data, out, k, top, left, flip, **kw)
    return out


@pytest.mark.parametrize("sampling", [name for name, _ in jpeg_layouts.SAMPLINGS])
def test_every_layout_region_equals_the_whole_decode(writer, sampling):
    factors = dict(jpeg_layouts.SAMPLINGS)[sampling]
    rng = random.Random(sampling)
    checked = 0
    for i, (height, width) in enumerate(jpeg_layouts.SIZES):
        img = jpeg_layouts.pixels(height, width, i)
        for coding, (progressive, arithmetic) in jpeg_layouts.CODINGS.items():
            data = writer.encode(img, factors, bool(progressive), bool(arithmetic), restart_rows=i % 2)
            for k in (1, 2, 4, 8):
                rows, cols = jpeg.decoded_size(height, width, k)
                whole = decode(data, k, 0, 0, rows, cols)
                for top, left, h, w in boxes(rng, rows, cols, 4):
                    got = decode(data, k, top, left, h, w)
                    assert np.array_equal(got, whole[top:top + h, left:left + w]), (coding, height, width, k,
                                                                                      (top, left, h, w))
                    assert np.array_equal(decode(data, k, top, left, h, w, flip=True), got[:, ::-1])
                    checked += 1
    assert checked == len(jpeg_layouts.SIZES) * len(jpeg_layouts.CODINGS) * 4 * 7


def test_a_photo_last_rows_and_columns_equal_the_whole_decode():
    """A 313x450 4:2:0 photo, as n01632777_axolotl.JPEG: one-row and one-column boxes at its edges."""
    data = photo(313, 450, 7)
    for k in (1, 2, 4, 8):
        rows, cols = jpeg.decoded_size(313, 450, k)
        whole = decode(data, k, 0, 0, rows, cols)
        for top, left, h, w in [(rows - 1, 0, 1, cols), (rows - 1, 5, 1, 9), (0, cols - 1, rows, 1),
                                (rows - 2, cols - 3, 2, 3), (rows // 2, 0, 1, 1)]:
            assert np.array_equal(decode(data, k, top, left, h, w), whole[top:top + h, left:left + w]), (k, top, left)


@pytest.mark.parametrize("name,value", [("top", 2**32 + 3), ("left", 2**32 + 3), ("top", -1), ("left", -5),
                                        ("top", 2**64 + 1), ("top", 65536)])
def test_out_of_range_integers_are_refused_not_wrapped(name, value):
    data, out = photo(64, 64, 1), np.empty((8, 8, 3), np.uint8)
    args = {"top": 3, "left": 3, name: value}
    with pytest.raises((ValueError, OverflowError), match=f"{name} must be in 0..65535"):
        decode_region(data, out, 1, args["top"], args["left"], False)
    with pytest.raises(ValueError, match="max_scans must be in 1"):
        decode_region(data, out, 1, 0, 0, False, max_scans=0)
    with pytest.raises(ValueError, match="max_pixels must be in 1"):
        decode_region(data, out, 1, 0, 0, False, max_pixels=-1)


def _repeat_dc_scan(data: bytes, n: int) -> bytes:
    """The first (DC) scan, made a non-refining one (Al = 0), repeated n times: a legal progression."""
    i = data.index(b"\xff\xda")
    length = int.from_bytes(data[i + 2:i + 4], "big")
    header = bytearray(data[i:i + 2 + length])
    header[-1] = 0
    j = i + 2 + length
    while not (data[j] == 0xFF and data[j + 1] != 0 and not 0xD0 <= data[j + 1] <= 0xD7):
        j += 1
    return data[:i] + (bytes(header) + data[i + 2 + length:j]) * n + data[i:]


def _claim_size(data: bytes, height: int, width: int) -> bytes:
    d = bytearray(data)
    sof = next(d.find(m) for m in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc9", b"\xff\xca") if d.find(m) >= 0)
    d[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(d)


def test_scan_work_and_pixel_limits_refuse_cpu_time_bombs(writer):
    base = writer.encode(jpeg_layouts.pixels(96, 96, 0), ((2, 2), (1, 1), (1, 1)), progressive=True)
    assert decode(_repeat_dc_scan(base, 50), 1, 0, 0, 8, 8).shape == (8, 8, 3)  # 60 scans: allowed
    bomb = _repeat_dc_scan(base, 2000)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="more than 100 scans"):
        decode(bomb, 1, 0, 0, 8, 8)
    with pytest.raises(ValueError, match="more than 100 scans"):  # the whole-image path counts them too
        jpeg.decode(bomb, 96, 96)
    assert decode(bomb, 1, 0, 0, 8, 8, max_scans=3000).shape == (8, 8, 3)  # the limit is the only reason
    # arithmetic-coded scans of a claimed 9459x9459 image: zeros decode silently once the data ends
    flat = writer.encode(np.full((64, 64, 3), 128, np.uint8), ((2, 2), (1, 1), (1, 1)), True, arithmetic=True)
    with pytest.raises(ValueError, match="pixels x components in all scans"):
        decode(_claim_size(_repeat_dc_scan(flat, 20), 9459, 9459), 1, 0, 0, 8, 8)
    with pytest.raises(ValueError, match="more than 1000000 pixels"):
        decode(_claim_size(flat, 9459, 9459), 1, 0, 0, 8, 8, max_pixels=1_000_000)
    assert time.perf_counter() - start < 3.0


def test_corrupt_data_is_refused_not_read_by_a_lenient_decoder():
    """A marker inside the entropy data, which PIL decodes (ignoring libjpeg's warning, filling the rest
    grey), is a ValueError where the crop covers it: before, simplejpeg refused it, then PIL read it."""
    good = photo(128, 128, 2)
    bad = good[:900] + b"\xff\xd3" + good[900:]
    Image.open(io.BytesIO(bad)).load()  # PIL reads it
    with pytest.raises(ValueError, match="Corrupt JPEG data"):
        jpeg.decode_box(bad, torch.empty((128, 128, 3), dtype=torch.uint8), 128, 128, 1, 0, 0, False)


def test_the_trainer_and_data_prep_use_the_same_limits():
    assert jpeg.MAX_SCANS == jpeg_check.MAX_SCANS == _jpeg_region.DEFAULT_MAX_SCANS
    assert jpeg.MAX_PIXELS == jpeg_check.MAX_PIXELS == _jpeg_region.DEFAULT_MAX_PIXELS


@pytest.mark.parametrize("sampling", ["422", "440", "444", "420"])
def test_a_progressive_file_missing_its_last_scans_equals_the_whole_decode(writer, sampling):
    """Found by bench/fuzz_decode.py: with AC coefficients left unknown libjpeg smooths each block from its
    neighbours' DC values, across a crop's edge (up to 4 levels off before); such files are decoded whole."""
    data = writer.encode(jpeg_layouts.pixels(130, 97, 3), dict(jpeg_layouts.SAMPLINGS)[sampling], progressive=True)
    sos = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xda"]
    cut = data[:sos[3]] + b"\xff\xd9"  # the DC scan and the first AC scans only
    whole = decode(cut, 1, 0, 0, 130, 97)
    for left in range(0, 97, 3):
        assert np.array_equal(decode(cut, 1, 0, left, 130, 1), whole[:, left:left + 1]), left
