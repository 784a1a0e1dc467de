"""Shared value types and naming rules: where one image's bytes live, and why an input was rejected.

A `Record` points at a whole file or at a byte range inside an (uncompressed) tar archive, so
workers can read any image directly without extracting anything to disk.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

# Extensions accepted from folders and archives; the content decides the real format later.
IMAGE_EXTS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm")
_WNID = re.compile(r"n[0-9]{8}")


@dataclass(frozen=True, slots=True)   # slots: ImageNet train is 1.28 M of these
class Record:
    key: str                # sample key: the source file's stem
    wnid: str | None        # class folder name / WNID; None until a label file names it
    path: str               # file on disk, or the archive that holds the image
    offset: int = -1        # byte offset of the image inside `path`; -1 means the whole file
    size: int = -1          # byte length inside the archive
    member: str = ""        # name inside the archive (for messages only)


@dataclass(frozen=True)
class Rejected:
    key: str
    source: str
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


class PrepError(Exception):
    """A problem with the inputs that must stop the run before any shard is written."""


def key_of(name: str) -> str:
    """Sample key = file stem; dots would split the sample inside webdataset, so they become '_'."""
    stem = os.path.splitext(os.path.basename(name))[0]
    return stem.replace(".", "_")


def class_name_problem(name: str, wnid_only: bool) -> str | None:
    """Why a folder/tar name is not a class (None when it is one). `wnid_only` in imagenet mode:
    a stray folder counted as a class would shift every later label by one."""
    if name == "lost+found":
        return "lost+found is the file system's recovery folder, never a class"
    if wnid_only and not _WNID.fullmatch(name):
        return "not a WNID (n + 8 digits), so not an ImageNet class"
    return None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTS) and not os.path.basename(name).startswith(".")


def read_bytes(rec: Record) -> bytes:
    """The image's raw bytes, from its file or by offset from its archive."""
    if rec.offset < 0:
        with open(rec.path, "rb") as f:
            return f.read()
    fd = os.open(rec.path, os.O_RDONLY)
    try:
        data = os.pread(fd, rec.size, rec.offset)
    finally:
        os.close(fd)
    if len(data) != rec.size:
        raise OSError(f"archive ended early: wanted {rec.size} bytes at offset {rec.offset}")
    return data
