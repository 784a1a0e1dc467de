"""Index uncompressed tar archives without extracting them: every image becomes a byte range.

Handles the official train archive (a tar of class tars), single class tars and the flat val
tar. Nested tars that are not classes are skipped and reported. Members with absolute paths,
`..`, links or special types are refused and reported; they are never opened or written anywhere.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field

from .records import PrepError, Record, Rejected, class_name_problem, is_image_name, key_of

_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def member_problem(m: tarfile.TarInfo) -> str | None:
    """Why this member must not be used, or None when it is safe."""
    parts = m.name.replace("\\", "/").split("/")
    if m.name.startswith(("/", "\\")) or (len(m.name) > 1 and m.name[1] == ":"):
        return "absolute path"
    if ".." in parts:
        return "path escapes the archive (..)"
    if m.issym() or m.islnk():
        return "link"
    if m.issparse() or not (m.isreg() or m.isdir()):
        return "special file type"
    return None


def _check_uncompressed(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise PrepError(f"{path} is {kind}-compressed; images are read by offset, "
                            "so decompress it once (the official ImageNet tars are not compressed)")


@dataclass
class ArchiveIndex:
    records: list[Record] = field(default_factory=list)
    refused: list[Rejected] = field(default_factory=list)    # unsafe members
    ignored: int = 0                                          # files without an image extension
    skipped: list[dict] = field(default_factory=list)        # class tars that are not classes
    empty: list[str] = field(default_factory=list)           # class tars without one image


def _walk(tf: tarfile.TarFile, path: str, base: int, prefix: str, wnid: str | None,
          wnid_only: bool, out: ArchiveIndex) -> None:
    """Index the members of `tf` (which starts `base` bytes into `path`) into `out`."""
    for m in tf:
        name = prefix + m.name
        problem = member_problem(m)
        if problem:
            out.refused.append(Rejected(key_of(m.name), f"{path}:{name}",
                                        f"unsafe archive member refused: {problem}"))
        elif m.isdir():
            continue
        elif m.name.endswith(".tar") and not prefix:
            # A class tar inside the official train archive: index it in place.
            cls = os.path.basename(m.name)[: -len(".tar")]
            not_class = class_name_problem(cls, wnid_only)
            if not_class:
                out.skipped.append({"source": f"{path}:{name}", "reason": not_class})
                continue
            before = len(out.records)
            inner = tarfile.open(fileobj=tf.extractfile(m), mode="r:")
            _walk(inner, path, base + m.offset_data, name + "/", cls, wnid_only, out)
            if len(out.records) == before:
                out.empty.append(f"{path}:{name}")
        elif is_image_name(m.name):
            parent = os.path.basename(os.path.dirname(m.name))
            if parent and class_name_problem(parent, wnid_only):
                parent = ""         # e.g. a top folder of a flat val tar: labels come from a label file
            out.records.append(Record(key_of(m.name), wnid or parent or None, path,
                                      base + m.offset_data, m.size, name))
        else:
            out.ignored += 1


def index_archive(path: str, wnid: str | None = None, wnid_only: bool = False) -> ArchiveIndex:
    """Records, refused members, ignored-file count, skipped and empty class tars of one archive.

    `wnid` labels every image (a class tar); otherwise nested class tars or folder names do.
    `wnid_only` (imagenet mode): nested tars not named like a WNID are skipped, not classes.
    """
    _check_uncompressed(path)
    out = ArchiveIndex()
    try:
        with tarfile.open(path, mode="r:") as tf:
            _walk(tf, path, 0, "", wnid, wnid_only, out)
    except tarfile.TarError as e:
        raise PrepError(f"{path}: not a readable tar archive ({e})") from None
    return out
