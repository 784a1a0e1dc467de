"""JPEGs of every layout: sampling factors x baseline/progressive/arithmetic x odd sizes, for the region
decoder's tests and fuzzing (tests/unit/test_jpeg_region_layouts.py, bench/fuzz_decode.py).

The writer is bench/jpeg_layouts.c, compiled once into `cache_dir` with the system's C compiler against its
libjpeg (what the extension builds with) and loaded with ctypes: PIL and simplejpeg write few layouts.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("jpeg_layouts.c")
# (name, per-component (h, v) sampling factors); one component is greyscale
SAMPLINGS: list[tuple[str, tuple[tuple[int, int], ...]]] = [
    ("444", ((1, 1), (1, 1), (1, 1))), ("422", ((2, 1), (1, 1), (1, 1))), ("440", ((1, 2), (1, 1), (1, 1))),
    ("420", ((2, 2), (1, 1), (1, 1))), ("411", ((4, 1), (1, 1), (1, 1))), ("410", ((4, 2), (1, 1), (1, 1))),
    ("441", ((1, 4), (1, 1), (1, 1))), ("31", ((3, 1), (1, 1), (1, 1))), ("32", ((3, 2), (1, 1), (1, 1))),
    ("22-21-11", ((2, 2), (2, 1), (1, 1))), ("22-12-21", ((2, 2), (1, 2), (2, 1))),
    ("11-22-11", ((1, 1), (2, 2), (1, 1))), ("24", ((2, 4), (1, 1), (1, 1))), ("gray", ((1, 1),)),
    ("gray22", ((2, 2),)),
]
CODINGS = {"baseline": (0, 0), "progressive": (1, 0), "arithmetic": (0, 1), "arith-progressive": (1, 1)}
SIZES = [(1, 1), (7, 9), (9, 16), (16, 7), (17, 33), (33, 47), (61, 83), (130, 97)]  # (height, width)


class Writer:
    """`encode(pixels, factors, progressive, arithmetic)` -> JPEG bytes, any layout."""

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        lib = Path(cache_dir) / f"jpeg_layouts-{digest}.so"
        if not lib.exists():
            cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
            if shutil.which(cc) is None:
                cc = "cc"
            tmp = lib.with_suffix(f".{os.getpid()}.tmp")
            subprocess.run([cc, "-shared", "-fPIC", "-O1", str(SOURCE), "-ljpeg", "-o", str(tmp)], check=True,
                           capture_output=True)
            os.replace(tmp, lib)
        self._lib = ctypes.CDLL(str(lib))
        self._lib.encode_layout.restype = ctypes.c_ulong
        self._lib.encode_layout.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                            ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                            ctypes.c_int, ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte))]
        self._lib.free_jpeg.argtypes = [ctypes.POINTER(ctypes.c_ubyte)]

    def encode(self, pixels: np.ndarray, factors: tuple[tuple[int, int], ...], progressive: bool = False,
               arithmetic: bool = False, quality: int = 90, restart_rows: int = 0) -> bytes:
        h, w = pixels.shape[:2]
        ncomp = len(factors)
        data = np.ascontiguousarray(pixels if ncomp == 3 else pixels[..., :1], np.uint8)
        hv = (ctypes.c_int * (2 * ncomp))(*[f for pair in factors for f in pair])
        out = ctypes.POINTER(ctypes.c_ubyte)()
        size = self._lib.encode_layout(data.tobytes(), w, h, ncomp, hv, quality, int(progressive), int(arithmetic),
                                       restart_rows, ctypes.byref(out))
        if size == 0:
            raise ValueError(f"libjpeg could not write a {h}x{w} {factors} JPEG")
        try:
            return ctypes.string_at(out, size)
        finally:
            self._lib.free_jpeg(out)


def pixels(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour gradients, blocky patches and noise: chroma that differs from pixel to pixel."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(x / (3 + c) + y / (5 + 2 * c) + c) for c in range(3)], -1)
    img += rng.normal(0, 25, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def corpus(writer: Writer, sizes: list[tuple[int, int]] = SIZES, seed: int = 0) -> list[tuple[str, bytes]]:
    """(name, JPEG) for every sampling x coding x size; sizes a layout cannot be written at are left out."""
    out = []
    for i, (h, w) in enumerate(sizes):
        img = pixels(h, w, seed + i)
        for sname, factors in SAMPLINGS:
            for cname, (progressive, arithmetic) in CODINGS.items():
                restart = 1 if (i + len(sname)) % 3 == 0 else 0  # restart markers in some of them
                data = writer.encode(img, factors, bool(progressive), bool(arithmetic), restart_rows=restart)
                out.append((f"{sname}-{cname}-{h}x{w}{'-rst' if restart else ''}", data))
    return out
