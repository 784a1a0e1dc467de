"""data_prep on broken label files and shards: a non-UTF-8 devkit ground truth or Kaggle CSV and a missing
--synsets file end in a clear error naming the file (status 2), not a traceback; `verify` reports a shard
member that is a dangling symlink instead of ending in a KeyError; a file of more than MAX_SCANS scans is
rejected at prep, and one with stray bytes before a marker is written anew (the trainer refuses it as is).
"""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from bench import jpeg_layouts
from data_prep.__main__ import main
from data_prep.encode import EncodeOptions, RejectImage, to_rgb_jpeg
from data_prep.jpeg_check import strict_check
from data_prep.verify import check_shard

from helpers.fixtures_imagenet import official_layout
from helpers.images import photo

RUN = ["--workers", "1", "--no-progress", "--shard-size", "50"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return official_layout(str(tmp_path_factory.mktemp("dl")), classes=2, per_class=2, val_count=3)


def _args(layout, tmp_path, *labels):
    p = layout["paths"]
    return ["imagenet", "--train", p["ILSVRC2012_img_train.tar"], "--val", p["ILSVRC2012_img_val.tar"],
            *labels, "--out", str(tmp_path / "out"), *RUN]


def test_a_non_utf8_kaggle_csv_is_a_clear_error(layout, tmp_path, capsys):
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_bytes(b"ImageId,PredictionString\nILSVRC2012_val_00000001,n0\xff\xfe 1 2 3 4\n")
    assert main(_args(layout, tmp_path, "--val-labels", str(csv))) == 2
    assert f"{csv}: not a UTF-8 CSV file" in capsys.readouterr().err


def test_a_non_utf8_devkit_ground_truth_is_a_clear_error(layout, tmp_path, capsys):
    with tarfile.open(layout["paths"]["ILSVRC2012_devkit_t12.tar.gz"]) as src:
        files = {m.name: src.extractfile(m).read() for m in src if m.isreg()}  # type: ignore[union-attr]
    bad = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(bad, "w:gz") as tf:
        for name, data in files.items():
            data = b"1\n\xff\xfe\n" if name.endswith("ground_truth.txt") else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    assert main(_args(layout, tmp_path, "--devkit", str(bad))) == 2
    err = capsys.readouterr().err
    assert f"{bad}:data/ILSVRC2012_validation_ground_truth.txt: not a text file" in err


def test_a_missing_synsets_file_is_a_clear_error(layout, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "LOC_synset_mapping.txt"
    assert main(_args(layout, tmp_path, "--val-labels", layout["paths"]["LOC_val_solution.csv"],
                      "--synsets", str(missing))) == 2
    assert f"{missing}: cannot read the synset list" in capsys.readouterr().err


def test_verify_reports_a_dangling_symlink_member(tmp_path):
    shard = tmp_path / "s-000000.tar"
    with tarfile.open(shard, "w") as tf:
        for name, data in (("a.jpg", photo(32, 32, 1)), ("a.cls", b"0")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("b.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "missing.jpg"
        tf.addfile(link)
    data = shard.read_bytes()
    res = check_shard((str(tmp_path), shard.name, 2, hashlib.sha256(data).hexdigest(), len(data), 1, ""))
    assert any("b.jpg is not a regular file" in p for p in res.problems), res.problems


def test_prep_rejects_many_scans_and_rewrites_stray_bytes(tmp_path):
    writer = jpeg_layouts.Writer(tmp_path)
    base = writer.encode(jpeg_layouts.pixels(48, 48, 0), ((2, 2), (1, 1), (1, 1)), progressive=True)
    assert to_rgb_jpeg(base, EncodeOptions()).data == base  # 10 scans: kept byte for byte
    bomb = base[:-2] + b"\xff\xda\x00\x08\x01\x01\x00\x00\x00\x00" * 150 + base[-2:]
    with pytest.raises(RejectImage, match="more than 100 scans"):
        to_rgb_jpeg(bomb, EncodeOptions())
    stray = photo(48, 48, 3)
    sos = stray.index(b"\xff\xda")
    stray = stray[:sos] + b"junk" + stray[sos:]  # libjpeg warns "extraneous bytes before marker 0xda"
    done = to_rgb_jpeg(stray, EncodeOptions())
    assert done.repair is not None and b"junk" not in done.data
    strict_check(done.data, 48, 48)  # what the trainer reads
