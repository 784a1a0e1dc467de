"""The strict check a JPEG passes before it goes into a shard, and that `verify` repeats: the trainer's own
decoder (trainer/data/_jpeg_region.c) decodes the whole image once, at 1/8 scale (every coefficient is still
read), with the trainer's limits: any libjpeg warning, a missing end of image, more than MAX_SCANS scans or
MAX_PIXELS pixels refuse it. Where the extension is not built: simplejpeg's strict decode, scans counted.
"""

from __future__ import annotations

import numpy as np
import simplejpeg

try:
    from trainer.data._jpeg_region import decode_region
except ImportError:  # built without libjpeg-turbo's headers
    decode_region = None

# The trainer's limits (trainer/data/jpeg.py; tests/unit/test_jpeg_fuzz.py checks they agree)
MAX_PIXELS = 89_478_485
MAX_SCANS = 100


def scans(data: bytes) -> int:
    """How many scans a JPEG holds, at most: each starts with an SOS marker, which entropy-coded data never
    holds (an embedded thumbnail's count too, so this may overcount by its few)."""
    return data.count(b"\xff\xda")


def check_scans(data: bytes) -> None:
    if scans(data) > MAX_SCANS:
        raise ValueError(f"more than {MAX_SCANS} scans (a CPU-time bomb): refused")


def strict_check(data: bytes, height: int, width: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raise ValueError (the reason) unless the trainer reads every row and column of this JPEG."""
    if width * height > max_pixels:
        raise ValueError(f"the image is {width}x{height}, more than {max_pixels} pixels")
    if decode_region is None:
        check_scans(data)
        simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, min_factor=8)
        return
    out = np.empty((-(-height // 8), -(-width // 8), 3), np.uint8)
    decode_region(data, out, 8, 0, 0, False, max_pixels=max_pixels, max_scans=MAX_SCANS)
