"""Command-line values checked before any work: numbers in range, a plain shard prefix, and an
--out that neither lies inside a source folder nor holds one where shards are written.

A bad value found later would leave a plan behind that refuses the corrected command.
"""

from __future__ import annotations

import argparse
import os
import re

from .records import PrepError

_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
WRITTEN = ("train", "val", "_prep")       # what data_prep writes inside --out


def int_in(lo: int, hi: int | None = None):
    """argparse type: an integer in lo..hi (argparse names the option and exits with status 2)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < lo or (hi is not None and v > hi):
            want = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"must be an integer {want}, got {v}")
        return v
    return parse


def plain_name(text: str) -> str:
    """argparse type for --prefix: it names files inside --out, so no paths."""
    if not _PLAIN_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a plain name: use letters, digits, '.', '_' and '-' (no '/', "
            "not starting with '.'); it names the shard files inside --out")
    return text


def _within(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_prep(a: argparse.Namespace) -> None:
    """Relations between options of `folder`/`imagenet`; a PrepError names the option."""
    if a.part >= a.num_parts:
        raise PrepError(f"--part {a.part} must be below --num-parts {a.num_parts} "
                        "(parts are numbered 0..P-1)")
    if os.path.exists(a.out) and not os.path.isdir(a.out):
        raise PrepError(f"--out {a.out} is a file; give a folder (new or from an earlier run)")
    for opt, src in (("--train", a.train), ("--val", a.val)):
        if not src:
            continue
        if os.path.isdir(src) and _within(a.out, src):
            raise PrepError(f"--out {a.out} is inside {opt} {src}: the shards would mix with the "
                            f"source images; choose an --out outside {opt}")
        for sub in WRITTEN:
            if _within(src, os.path.join(a.out, sub)):
                raise PrepError(f"{opt} {src} is inside {os.path.join(a.out, sub)}, where data_prep "
                                "writes; choose another --out")
