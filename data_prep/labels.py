"""Validation labels and class names from the ImageNet devkit or Kaggle's files.

Devkit: data/meta.mat maps ILSVRC2012_ID -> WNID (IDs are NOT in sorted-WNID order, so they are
never used as class indices); data/ILSVRC2012_validation_ground_truth.txt holds one ID per val
image in file order. Kaggle: LOC_val_solution.csv (WNID = first token of PredictionString) and
LOC_synset_mapping.txt (names). Every inconsistency is a PrepError naming the file.
"""

from __future__ import annotations

import csv
import io
import os
import tarfile

from .records import PrepError

META = "data/meta.mat"
TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"


def _devkit_files(path: str) -> dict[str, bytes]:
    """meta.mat and the ground truth, from the devkit tar(.gz) or its extracted folder."""
    found = {}
    if os.path.isdir(path):
        for dirpath, _, files in os.walk(path):
            for f in files:
                full = os.path.join(dirpath, f).replace(os.sep, "/")
                for want in (META, TRUTH):
                    if full.endswith("/" + want):
                        found[want] = open(full, "rb").read()
    else:
        try:
            with tarfile.open(path) as tf:    # read in memory only; nothing is extracted
                for m in tf:
                    for want in (META, TRUTH):
                        if m.isreg() and (m.name == want or m.name.endswith("/" + want)):
                            found[want] = tf.extractfile(m).read()  # type: ignore[union-attr]  # a regular file
        except (tarfile.TarError, OSError) as e:
            raise PrepError(f"{path}: cannot read the devkit archive ({e})") from None
    missing = [w for w in (META, TRUTH) if w not in found]
    if missing:
        raise PrepError(f"{path}: devkit lacks {missing}")
    return found


def _text(v) -> str:
    """A MATLAB string as loaded by scipy (str, or a 0-d/1-element array)."""
    while hasattr(v, "shape") and getattr(v, "size", 0) == 1 and not isinstance(v, str):
        v = v.item() if v.shape == () else v.reshape(-1)[0]
    return str(v)


def read_meta(data: bytes, where: str) -> tuple[dict[int, str], dict[str, str]]:
    """Leaf synsets of meta.mat: ILSVRC2012_ID -> WNID, and WNID -> first name in `words`."""
    import scipy.io

    try:
        synsets = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
        ids, names = {}, {}
        for s in synsets.reshape(-1):
            if int(s["num_children"]) != 0:
                continue        # inner nodes of the WordNet tree are not classes
            wnid = _text(s["WNID"])
            ids[int(s["ILSVRC2012_ID"])] = wnid
            names[wnid] = _text(s["words"]).split(",")[0].strip()
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise PrepError(f"{where}: not an ImageNet meta.mat ({type(e).__name__}: {e})") from None
    return ids, names


def devkit_labels(path: str) -> tuple[dict[str, str], dict[str, str]]:
    """Val key -> WNID (line i labels ILSVRC2012_val_<i>) and WNID -> name, from the devkit."""
    files = _devkit_files(path)
    ids, names = read_meta(files[META], f"{path}:{META}")
    labels, unknown = {}, []
    try:
        truth = files[TRUTH].decode("ascii")
    except UnicodeDecodeError as e:
        raise PrepError(f"{path}:{TRUTH}: not a text file of class IDs ({e})") from None
    for i, line in enumerate(truth.split(), 1):
        try:
            wnid = ids[int(line)]
        except (ValueError, KeyError):
            unknown.append(f"line {i}: {line!r}")
            continue
        labels[f"ILSVRC2012_val_{i:08d}"] = wnid
    if unknown:
        raise PrepError(f"{path}:{TRUTH}: {len(unknown)} IDs are not leaf classes in meta.mat, "
                        f"e.g. {unknown[:3]}")
    return labels, names


def kaggle_labels(path: str) -> dict[str, str]:
    """Val key -> WNID from LOC_val_solution.csv."""
    labels = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.DictReader(f)
            if not {"ImageId", "PredictionString"} <= set(rows.fieldnames or ()):
                raise PrepError(f"{path}: expected columns ImageId,PredictionString, "
                                f"found {rows.fieldnames}")
            for n, row in enumerate(rows, 2):
                tokens = (row["PredictionString"] or "").split()
                if not tokens or not row["ImageId"]:
                    raise PrepError(f"{path}: line {n} has no image id or no WNID")
                if row["ImageId"] in labels:
                    raise PrepError(f"{path}: line {n} repeats image {row['ImageId']}")
                labels[row["ImageId"]] = tokens[0]
    except OSError as e:
        raise PrepError(f"{path}: cannot read ({e})") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise PrepError(f"{path}: not a UTF-8 CSV file ({e})") from None
    return labels


def synset_names(path: str) -> dict[str, str]:
    """WNID -> first name, from LOC_synset_mapping.txt lines like 'n01440764 tench, Tinca tinca'."""
    names = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                wnid, _, words = line.strip().partition(" ")
                if wnid:
                    names[wnid] = words.split(",")[0].strip() or wnid
    except OSError as e:
        raise PrepError(f"{path}: cannot read the synset list ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise PrepError(f"{path}: not a UTF-8 synset list ({e})") from None
    return names


def check_coverage(image_keys: set[str], labels: dict[str, str], where: str) -> None:
    """Every image has exactly one label and every label has an image, or a PrepError."""
    missing = sorted(image_keys - labels.keys())
    extra = sorted(labels.keys() - image_keys)
    problems = []
    if missing:
        problems.append(f"{len(missing)} images have no label (e.g. {missing[:3]})")
    if extra:
        problems.append(f"{len(extra)} labels name images that are not there (e.g. {extra[:3]})")
    if problems:
        raise PrepError(f"{where} does not match the val images: " + "; ".join(problems))
