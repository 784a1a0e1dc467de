"""Find the images of one split, whatever the layout, as `Record`s (key, WNID, where the bytes are).

Layouts: a folder of class folders; a flat folder (labels come from a label file); a folder of
class tars; a tar of class tars (the official train archive); a flat tar (the official val archive).
Archives are indexed, never extracted (see archives.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .archives import index_archive
from .records import PrepError, Record, Rejected, is_image_name, key_of


def _visible(names: list[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def class_folders(root: str) -> list[str]:
    return [d for d in _visible(os.listdir(root)) if os.path.isdir(os.path.join(root, d))]


def folder_records(root: str) -> tuple[list[Record], list[str], int]:
    """Images under root/<class>/... (any depth): records, class names, count of ignored files."""
    records, ignored = [], 0
    classes = class_folders(root)
    for wnid in classes:
        for dirpath, dirnames, files in os.walk(os.path.join(root, wnid)):
            dirnames[:] = _visible(dirnames)
            for name in _visible(files):
                if is_image_name(name):
                    records.append(Record(key_of(name), wnid, os.path.join(dirpath, name)))
                else:
                    ignored += 1
    return records, classes, ignored


def flat_records(root: str) -> tuple[list[Record], int]:
    """Images directly in root, unlabelled (the extracted official/Kaggle val folder)."""
    names = [n for n in _visible(os.listdir(root)) if os.path.isfile(os.path.join(root, n))]
    images = [n for n in names if is_image_name(n)]
    return [Record(key_of(n), None, os.path.join(root, n)) for n in images], len(names) - len(images)


@dataclass
class SplitScan:
    records: list[Record]                                     # labels may still be None (flat layouts)
    refused: list[Rejected] = field(default_factory=list)    # unsafe archive members
    ignored: int = 0                                          # files without an image extension
    classes: list[str] = field(default_factory=list)          # class folders / class tars seen


def scan_split(path: str) -> SplitScan:
    """Records of one split from any supported layout."""
    if os.path.isfile(path):
        records, refused, ignored = index_archive(path)
        return SplitScan(records, refused, ignored, sorted({r.wnid for r in records if r.wnid}))
    if not os.path.isdir(path):
        raise PrepError(f"{path}: no such file or folder")
    tars = [n for n in _visible(os.listdir(path)) if n.endswith(".tar")]
    if tars and not class_folders(path):
        scan = SplitScan([], classes=[t[: -len(".tar")] for t in tars])
        for name in tars:
            records, refused, ignored = index_archive(os.path.join(path, name),
                                                      wnid=name[: -len(".tar")])
            scan.records += records
            scan.refused += refused
            scan.ignored += ignored
        return scan
    if class_folders(path):
        records, classes, ignored = folder_records(path)
        return SplitScan(records, [], ignored, classes)
    records, ignored = flat_records(path)
    return SplitScan(records, [], ignored, [])
