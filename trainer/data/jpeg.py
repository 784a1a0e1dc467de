"""JPEG bytes -> RGB pixels: the image's size from its header, the whole image, or only a crop's region.

Region decoding (trainer/data/_jpeg_region.c, libjpeg-turbo's partial decode) gives the same pixels as a
whole-image decode of the same rows and columns at ~0.85 of its cost (docs/benchmarks.md). Where that
extension was not built, or the bytes are not a JPEG libjpeg-turbo gives RGB for (CMYK, PNG), the whole
image is decoded and cut instead. Corrupt data and files past the work limits are refused, never retried.
"""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
import torch
from PIL import Image

try:
    from trainer.data._jpeg_region import Unsupported
    from trainer.data._jpeg_region import decode_region as _decode_region
except ImportError:  # built without libjpeg-turbo's headers: whole-image decodes, same pixels
    _decode_region = None

    class Unsupported(ValueError):  # type: ignore[no-redef]
        """Never raised: the extension's name for bytes another decoder may read."""

REGION_DECODE = _decode_region is not None
# Refused before any pixel is allocated: a header may claim 65535 x 65535 (12 GB of RGB). PIL's and
# data_prep's limit (--max-pixels).
MAX_PIXELS = 89_478_485
# A file may repeat scans: each costs a pass over the image (2,000 scans: 1.4 s). libjpeg writes 10,
# mozjpeg ~20; the extension also stops at 16 component passes over MAX_PIXELS (data_prep: the same limits).
MAX_SCANS = 100
SOS = b"\xff\xda"


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from the JPEG header alone (any other format: PIL reads its header)."""
    try:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        w, h = Image.open(io.BytesIO(data)).size
    if h * w > MAX_PIXELS:
        raise ValueError(f"the image is {w}x{h}, more than {MAX_PIXELS} pixels")
    return h, w


def decode(data: bytes, height: int, width: int, reduction: int = 1) -> np.ndarray:
    """HWC uint8 RGB, about `reduction` times smaller per side (exact sizes: read the array's shape)."""
    if data[:2] == b"\xff\xd8" and data.count(SOS) > MAX_SCANS:  # each SOS marker starts a scan
        raise ValueError(f"more than {MAX_SCANS} scans (a CPU-time bomb): refused")
    try:
        # strict: a truncated JPEG raises instead of decoding with its missing rows filled grey; PIL
        # below still reads files with mere warnings (extraneous bytes), and refuses truncated ones too
        rows, cols = decoded_size(height, width, reduction)
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, min_height=rows, min_width=cols)
    except ValueError:  # not a JPEG libjpeg-turbo reads as RGB (e.g. CMYK, PNG): PIL, full size
        img = Image.open(io.BytesIO(data))
        return np.array(img if img.mode == "RGB" else img.convert("RGB"))  # a writable copy, as torch wants


def decoded_size(height: int, width: int, reduction: int) -> tuple[int, int]:
    """The size libjpeg-turbo decodes a (height, width) JPEG to at 1/reduction scale."""
    return -(-height // reduction), -(-width // reduction)


def decode_box(data: bytes, out: torch.Tensor, height: int, width: int, reduction: int, top: int, left: int,
               flip: bool) -> None:
    """Fill `out`, a contiguous (h, w, 3) uint8 tensor, with the pixels [top, top + h) x [left, left + w) of
    the (height, width) image decoded at 1/reduction scale (`decoded_size`), mirrored left-right if `flip`.
    Raises ValueError on corrupt data (in the rows it reads: damage below the crop goes unseen), on files
    past MAX_PIXELS or MAX_SCANS, on bytes that no decoder reads (the caller skips the sample)."""
    if _decode_region is not None:
        try:
            _decode_region(data, out.numpy(), reduction, top, left, flip, max_pixels=MAX_PIXELS,
                           max_scans=MAX_SCANS)
            return
        except Unsupported:  # CMYK, PNG: the whole-image decoders (PIL) read them
            pass
    pixels = torch.from_numpy(decode(data, height, width, reduction))
    rows, cols = decoded_size(height, width, reduction)
    if pixels.shape[:2] != (rows, cols):  # PIL decodes at full size: scale it as libjpeg-turbo would have
        pixels = torch.nn.functional.interpolate(pixels.permute(2, 0, 1)[None], (rows, cols), mode="bilinear",
                                                 antialias=True)[0].permute(1, 2, 0)
    h, w = out.shape[:2]
    region = pixels[top:top + h, left:left + w]
    out.copy_(region.flip(1) if flip else region)
