"""Find the images of one split, whatever the layout, as `Record`s (key, WNID, where the bytes are).

Layouts: a folder of class folders; a flat folder (labels come from a label file); a folder of
class tars; a tar of class tars (the official train archive); a flat tar (the official val archive).
Archives are indexed, never extracted (see archives.py). What is not a class is skipped and listed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .archives import index_archive
from .records import PrepError, Record, Rejected, class_name_problem, is_image_name, key_of


def _visible(names: list[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _no_images(where: str) -> PrepError:
    return PrepError(f"class {where} holds no images: an empty class would still take a class "
                     "index and shift the labels after it; add its images or remove it")


def folder_records(root: str, classes: list[str]) -> tuple[list[Record], int]:
    """Images under root/<class>/... (any depth): records and the count of ignored files."""
    records: list[Record] = []
    ignored = 0

    def unreadable(e: OSError) -> None:
        raise PrepError(f"cannot read {e.filename}: {e.strerror}") from None

    for wnid in classes:
        before = len(records)
        for dirpath, dirnames, files in os.walk(os.path.join(root, wnid), onerror=unreadable):
            dirnames[:] = _visible(dirnames)
            for name in _visible(files):
                if is_image_name(name):
                    records.append(Record(key_of(name), wnid, os.path.join(dirpath, name)))
                else:
                    ignored += 1
        if len(records) == before:
            raise _no_images(f"folder {os.path.join(root, wnid)}")
    return records, ignored


@dataclass
class SplitScan:
    records: list[Record]                                     # labels may still be None (flat layouts)
    refused: list[Rejected] = field(default_factory=list)    # unsafe archive members
    ignored: int = 0                                          # files without an image extension
    classes: list[str] = field(default_factory=list)          # class folders / class tars seen
    skipped: list[dict] = field(default_factory=list)        # source, reason: what is not a class


def _archive(path: str, wnid: str | None, wnid_only: bool, scan: SplitScan) -> None:
    got = index_archive(path, wnid, wnid_only)
    if got.empty or (wnid and not got.records):
        raise _no_images(f"tar {(got.empty or [path])[0]}")
    scan.records += got.records
    scan.refused += got.refused
    scan.ignored += got.ignored
    scan.skipped += got.skipped


def scan_split(path: str, wnid_only: bool = False) -> SplitScan:
    """Records of one split from any supported layout. Entries that are not classes (any non-WNID
    name when `wnid_only`, lost+found always, loose files beside class folders) are skipped and
    listed; a class without images is an error."""
    if os.path.isfile(path):
        scan = SplitScan([])
        _archive(path, None, wnid_only, scan)
        scan.classes = sorted({r.wnid for r in scan.records if r.wnid})
        return scan
    if not os.path.isdir(path):
        raise PrepError(f"{path}: no such file or folder")
    names = _visible(os.listdir(path))
    dirs = {n for n in names if os.path.isdir(os.path.join(path, n))}
    class_dirs = [d for d in sorted(dirs) if not class_name_problem(d, wnid_only)]
    class_tars = [n for n in names if n not in dirs and n.endswith(".tar")
                  and not class_name_problem(n[: -len(".tar")], wnid_only)]
    scan = SplitScan([])
    if class_tars and not class_dirs:
        used, loose = set(class_tars), "a file beside the class tars, not in any class"
        scan.classes = [t[: -len(".tar")] for t in class_tars]
        for name in class_tars:
            _archive(os.path.join(path, name), name[: -len(".tar")], wnid_only, scan)
    elif class_dirs:
        used, loose = set(class_dirs), "a file at the root of a class-folder tree, not in any class"
        scan.classes = class_dirs
        scan.records, scan.ignored = folder_records(path, class_dirs)
    else:   # flat: the extracted official/Kaggle val folder; labels come from a label file
        images = [n for n in names if n not in dirs and is_image_name(n)]
        used, loose = set(images), None
        scan.records = [Record(key_of(n), None, os.path.join(path, n)) for n in images]
    for n in names:
        if n in used:
            continue
        if n in dirs:
            why = class_name_problem(n, wnid_only)      # never None: it would be a class
        elif n.endswith(".tar") and class_name_problem(n[: -len(".tar")], wnid_only):
            why = class_name_problem(n[: -len(".tar")], wnid_only)
        elif loose:
            why = loose
        else:
            scan.ignored += 1                           # flat layout: a file without an image extension
            continue
        scan.skipped.append({"source": os.path.join(path, n), "reason": why})
    return scan
