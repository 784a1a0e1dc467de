"""Turn one image's raw bytes into the RGB JPEG bytes that go into a shard, or reject it.

Valid RGB/YCbCr JPEGs are kept byte for byte (decoded once, whole and strictly, by the trainer's own decoder
with its limits: jpeg_check.py). Files of more than MAX_SCANS scans are rejected before any decode.
CMYK and grayscale JPEGs and other formats (a PNG named .JPEG) are converted to RGB JPEGs;
16-bit and float pixels are scaled to 8 bits, not clipped (see pixels.py). `max_short_side`
re-encodes only images larger than it. Same input, same output bytes.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image

from .jpeg_check import check_scans, strict_check
from .pixels import NoRange, rgb8

# PIL's own decompression-bomb threshold; ImageNet's largest image is far below it.
DEFAULT_MAX_PIXELS = 89_478_485
JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class EncodeOptions:
    max_short_side: int | None = None
    quality: int = 90
    max_pixels: int = DEFAULT_MAX_PIXELS


class RejectImage(Exception):
    """The image cannot be used; the message is the reason recorded in the manifest."""


@dataclass(frozen=True)
class Encoded:
    data: bytes
    repair: str | None = None   # e.g. "cmyk->rgb", "png->jpeg", "png 16-bit->jpeg"
    resized: bool = False
    detail: str | None = None   # how deep pixels were scaled, e.g. "0..65535 (16-bit range) scaled to 0..255"


def _check_pixels(w: int, h: int, opts: EncodeOptions) -> None:
    if w * h > opts.max_pixels:
        raise RejectImage(f"too many pixels: {w}x{h} > {opts.max_pixels}")


def _target(w: int, h: int, opts: EncodeOptions) -> tuple[int, int] | None:
    """New (w, h) when the short side exceeds max_short_side, else None."""
    n = opts.max_short_side
    if not n or min(w, h) <= n:
        return None
    s = n / min(w, h)
    return (n, max(1, round(h * s))) if w <= h else (max(1, round(w * s)), n)


def _encode(rgb: np.ndarray, opts: EncodeOptions) -> bytes:
    return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=opts.quality,
                                  colorspace="RGB", colorsubsampling="420")


def _resize(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC))


def _decode_strict(data: bytes, **kw) -> np.ndarray:
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, **kw)
    except ValueError as e:
        # "Extraneous bytes before marker" leaves a complete image; any other warning means lost data.
        if "extraneous bytes" not in str(e):
            raise RejectImage(f"truncated or corrupt JPEG: {e}") from None
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=False, **kw)


def _from_jpeg(data: bytes, opts: EncodeOptions) -> Encoded | None:
    """Fast path via libjpeg-turbo; None when PIL must handle it (CMYK, odd headers)."""
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    _check_pixels(w, h, opts)
    if colorspace in ("CMYK", "YCCK"):
        return None     # PIL knows Adobe's inverted CMYK; libjpeg-turbo's RGB output would be wrong
    size = _target(w, h, opts)
    repair = "grayscale->rgb" if colorspace == "Gray" else None
    if size is None and repair is None:
        try:  # kept byte for byte only if the trainer's decoder reads all of it with no warning
            strict_check(data, h, w, opts.max_pixels)
            return Encoded(data)
        except ValueError as e:
            if "extraneous bytes" not in str(e):
                raise RejectImage(f"truncated or corrupt JPEG: {e}") from None
        # a complete image with stray bytes before a marker, which the trainer would refuse: written anew
        return Encoded(_encode(_decode_strict(data), opts), "jpeg extraneous bytes->jpeg")
    # DCT-domain downscaling to no less than the target size makes big images cheap to decode.
    kw = {"min_width": size[0], "min_height": size[1]} if size else {}
    rgb = _decode_strict(data, **kw)
    return Encoded(_encode(_resize(rgb, size), opts), repair, size is not None)


def _from_pil(data: bytes, opts: EncodeOptions) -> Encoded:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and bomb warnings: the pixel check below decides
            with Image.open(io.BytesIO(data)) as im:
                fmt = (im.format or "unknown").lower()
                _check_pixels(im.width, im.height, opts)
                im.load()
                mode = im.mode
                rgb, deep, detail = rgb8(im)
    except RejectImage:
        raise
    except NoRange as e:
        raise RejectImage(f"{fmt} {mode} image: {e}") from None
    except Image.DecompressionBombError as e:
        raise RejectImage(f"too many pixels: {e}") from None
    except Exception as e:  # PIL raises many types for broken files
        raise RejectImage(f"undecodable image: {type(e).__name__}: {e}") from None
    if fmt == "jpeg":
        repair = "cmyk->rgb" if mode == "CMYK" else f"{mode.lower()}->rgb"
    else:
        repair = f"{fmt} {deep}->jpeg" if deep else f"{fmt}->jpeg"
    h, w = rgb.shape[:2]
    size = _target(w, h, opts)
    return Encoded(_encode(_resize(rgb, size), opts), repair, size is not None, detail)


def to_rgb_jpeg(data: bytes, opts: EncodeOptions) -> Encoded:
    """Return the shard-ready JPEG for `data`, or raise RejectImage with the reason."""
    if not data:
        raise RejectImage("empty file")
    if data.startswith(JPEG_MAGIC):
        try:
            check_scans(data)  # before any decode: a file of many scans would hold a worker for seconds
        except ValueError as e:
            raise RejectImage(str(e)) from None
        done = _from_jpeg(data, opts)
        if done is not None:
            return done
    return _from_pil(data, opts)
