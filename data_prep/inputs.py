"""Gather the labelled records of each split and the class table for the two prep commands.

`folder`: class subfolders. `imagenet`: the official archives, the Kaggle layout or folders,
with val labels from the devkit or Kaggle's CSV. All label problems surface here, before a plan.
Inputs are scanned at their absolute paths, so every source lies inside `paths[split]` (plan.relative).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import labels as lab
from .plan import class_table
from .records import PrepError, Record, Rejected
from .sources import SplitScan, scan_split


@dataclass
class Inputs:
    splits: dict[str, list[Record]]
    classes: list[dict]
    refused: list[tuple[str, Rejected]] = field(default_factory=list)
    ignored: int = 0
    params: dict = field(default_factory=dict)           # command (and name): into the manifest's prep
    skipped: list[dict] = field(default_factory=list)    # split, source, reason: not classes
    paths: dict[str, str | None] = field(default_factory=dict)  # input -> absolute path on this machine


def _absolute(**given: str | None) -> dict[str, str | None]:
    return {k: os.path.abspath(v) if v else None for k, v in given.items()}


def _scan(split: str, path: str, wnid_only: bool = False) -> SplitScan:
    scan = scan_split(path, wnid_only)
    if not scan.records:
        raise PrepError(f"{split}: no images found in {path}")
    return scan


def _collect(scans: dict[str, SplitScan], classes: list[dict], params: dict,
             paths: dict[str, str | None]) -> Inputs:
    unlabelled = {s: sum(r.wnid is None for r in sc.records) for s, sc in scans.items()}
    for split, n in unlabelled.items():
        if n:
            raise PrepError(f"{split}: {n} images are not in class folders and no label file "
                            "was given (imagenet: use --devkit or --val-labels)")
    return Inputs({s: sc.records for s, sc in scans.items()}, classes,
                  [(s, r) for s, sc in scans.items() for r in sc.refused],
                  sum(sc.ignored for sc in scans.values()), params,
                  [dict(x, split=s) for s, sc in scans.items() for x in sc.skipped], paths)


def folder_inputs(train: str, val: str | None) -> Inputs:
    """Any image-folder dataset: class = folder name, index = its position in sorted order."""
    paths = _absolute(train=train, val=val)
    scans = {s: _scan(s, p) for s, p in paths.items() if p}
    classes = class_table(scans["train"].classes)
    return _collect(scans, classes, {"command": "folder"}, paths)


def _label_val(scan: SplitScan, labels: dict[str, str], where: str) -> None:
    """Attach label-file WNIDs to val records; a folder label that disagrees is an error."""
    lab.check_coverage({r.key for r in scan.records}, labels, where)
    clash = [r.key for r in scan.records if r.wnid and r.wnid != labels[r.key]]
    if clash:
        raise PrepError(f"{where} disagrees with the class folders of {len(clash)} images "
                        f"(e.g. {clash[:3]})")
    scan.records = [Record(r.key, labels[r.key], r.path, r.offset, r.size, r.member)
                    for r in scan.records]


def imagenet_inputs(train: str | None, val: str | None, devkit: str | None = None,
                    val_labels: str | None = None, synsets: str | None = None) -> Inputs:
    """ImageNet from the official archives, the Kaggle layout or folders (see module doc)."""
    if not train and not val:
        raise PrepError("give --train and/or --val")
    paths = _absolute(train=train, val=val)
    # Only WNID-named folders/tars are classes: a stray `lost+found` would shift every label.
    scans = {s: _scan(s, p, wnid_only=True) for s, p in paths.items() if p}
    names: dict[str, str] = {}
    leaf_wnids: list[str] = []
    if synsets is None and val_labels:
        guess = os.path.join(os.path.dirname(os.path.abspath(val_labels)), "LOC_synset_mapping.txt")
        synsets = guess if os.path.exists(guess) else None
    if synsets:
        names = lab.synset_names(synsets)
        leaf_wnids = list(names)
    class_list = synsets
    if devkit:
        val_map, names = lab.devkit_labels(devkit)
        leaf_wnids = list(names)
        where, class_list = f"{devkit}:{lab.TRUTH}", f"{devkit}:{lab.META}"
    elif val_labels:
        val_map, where = lab.kaggle_labels(val_labels), val_labels
    else:
        val_map, where = None, ""
    if val and val_map is not None:
        _label_val(scans["val"], val_map, where)
    # Class index = position in sorted order of the train WNIDs (else the label files' WNIDs).
    if train:
        wnids = scans["train"].classes
        unknown = sorted(set(wnids) - set(leaf_wnids)) if leaf_wnids else []
        if unknown:
            raise PrepError(f"{train}: class folders/tars {unknown[:5]}{' ...' if len(unknown) > 5 else ''} "
                            f"are not classes in {class_list}; remove them or give the matching "
                            "label files")
    else:
        wnids = leaf_wnids or sorted({r.wnid for r in scans["val"].records if r.wnid})
    classes = class_table(wnids, names)
    if val and val_map is not None:
        unknown = sorted({w for w in val_map.values()} - set(wnids))
        if unknown:
            raise PrepError(f"{where} names WNIDs that are not classes of the train set: "
                            f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    paths.update(_absolute(devkit=devkit, val_labels=val_labels, synsets=synsets))
    return _collect(scans, classes, {"command": "imagenet"}, paths)
