"""A decoded PIL image as 8-bit RGB pixels, scaled (never clipped) when it has more than 8 bits.

PIL's convert("RGB") clips 16-bit (I;16, I) and float (F) pixels to 0..255: a 16-bit photo turns
white, a 0..1 float image black. Integers are scaled from their declared range (the TIFF's
SMinSampleValue/SMaxSampleValue, else the full 16-bit range, as libpng's 16->8 strip does), so a
dark image stays dark. Floats use the declared range, else 0..1 when every value lies in it (the
usual float convention), else the observed min..max. What has no usable range is rejected.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_SMIN, _SMAX, _BITS = 340, 341, 258     # TIFF tags: SMinSampleValue, SMaxSampleValue, BitsPerSample


class NoRange(ValueError):
    """The pixel values cannot be mapped to 0..255 faithfully; the message says why."""


def _declared(im: Image.Image) -> tuple[float, float] | None:
    tags = getattr(im, "tag_v2", None) or {}
    try:
        lo, hi = float(np.min(tags[_SMIN])), float(np.max(tags[_SMAX]))
    except (KeyError, TypeError, ValueError):
        return None
    return (lo, hi) if hi > lo else None


def _int_range(im: Image.Image, a: np.ndarray) -> tuple[float, float, str]:
    declared = _declared(im)
    if declared:
        return (*declared, "declared")
    if a.dtype.itemsize == 2:                       # I;16 and friends
        return float(np.iinfo(a.dtype).min), float(np.iinfo(a.dtype).max), "16-bit range"
    bits = (getattr(im, "tag_v2", None) or {}).get(_BITS, (32,))
    if im.format == "PNG" or tuple(np.atleast_1d(bits)) == (16,):    # 16-bit data held in mode I
        return 0.0, 65535.0, "16-bit range"
    raise NoRange("32-bit integer pixels with no declared range: cannot scale them to 8 bits")


def _float_range(im: Image.Image, a: np.ndarray) -> tuple[float, float, str]:
    if not np.isfinite(a).all():
        raise NoRange("float pixels include NaN or infinity")
    declared = _declared(im)
    if declared:
        return (*declared, "declared")
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0, "0..1 convention"
    if hi <= lo:
        raise NoRange(f"constant float image ({lo:g}) outside 0..1: no range to scale it by")
    return lo, hi, "observed"


def rgb8(im: Image.Image) -> tuple[np.ndarray, str | None, str | None]:
    """(H, W, 3) uint8 pixels of a loaded image, the deep kind ("16-bit", "32-bit", "float"; None
    for ordinary 8-bit modes) and how it was scaled. Raises NoRange when no mapping is faithful."""
    if im.mode not in ("F", "I") and not im.mode.startswith("I;16"):
        return np.asarray(im.convert("RGB")), None, None
    raw = np.asarray(im)
    a = raw.astype(np.float64)
    if im.mode == "F":
        kind, (lo, hi, how) = "float", _float_range(im, a)
    else:
        lo, hi, how = _int_range(im, raw)
        kind = "16-bit" if raw.dtype.itemsize == 2 or how == "16-bit range" else "32-bit"
    scaled = np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    return np.repeat(scaled[:, :, None], 3, axis=2), kind, f"{lo:g}..{hi:g} ({how}) scaled to 0..255"
