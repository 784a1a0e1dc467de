"""trainer/data/tarstream.py, the loader's tar reader, against webdataset's reading of the same shards: the same
keys, bytes and order on data_prep's shards and on tars written every other common way (pax headers, GNU and
ustar long names, directories, links, meta files, upper-case extensions, gzip). Damage is refused, more
strictly than tarfile does: a damaged header after the first ends tarfile's archive without an error.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import time
from pathlib import Path

import pytest
import webdataset as wds

from trainer.data import tarstream
from trainer.data.loader import _read
from trainer.data.manifest import load_manifest


def webdataset_samples(path: Path) -> list[tuple[str, dict[str, bytes]]]:
    return [(s["__key__"], {k: v for k, v in s.items() if not k.startswith("__")})
            for s in wds.tarfile_to_samples()(iter([{"url": str(path)}]))]


def ours(path: Path) -> list[tuple[str, dict[str, bytes]]]:
    with open(path, "rb") as f:
        return list(tarstream.samples(f))


def test_data_prep_shards_read_as_webdataset_reads_them(shards: Path):
    split = load_manifest(str(shards)).train
    for url in split.urls:
        theirs = webdataset_samples(Path(url))
        assert ours(Path(url)) == theirs and len(theirs) == 8
    # and through the loader's reader: keys, bytes and labels in shard order
    got = [(s.key, s.data, s.label) for s in _read(split, list(range(len(split.urls))), 4)]
    want = [(k, p["jpg"], int(p["cls"])) for url in split.urls for k, p in webdataset_samples(Path(url))]
    assert got == want


def _add(tf: tarfile.TarFile, name: str, payload: bytes, kind: bytes = tarfile.REGTYPE, **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type = len(payload) if kind == tarfile.REGTYPE else 0, kind
    for k, v in attrs.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_every_common_tar_layout_reads_as_webdataset_reads_it(tmp_path: Path, fmt: int):
    long_dir = "a-directory-name-long-enough-that-ustar-splits-it-into-prefix-and-name/" * 2
    path = tmp_path / "shard.tar"
    with tarfile.open(path, "w", format=fmt) as tf:
        _add(tf, "dir", b"", tarfile.DIRTYPE)
        _add(tf, "__meta__", b"skipped")
        _add(tf, "s0.jpg", b"\xff\xd8 zero", mtime=time.time())  # a float mtime: a pax header in PAX_FORMAT
        _add(tf, "s0.cls", b"3")
        _add(tf, "s1.JPG", bytes(range(256)) * 5)  # upper-case extension, data spanning blocks
        _add(tf, "s1.cls", b"1")
        _add(tf, "s1.link", b"", tarfile.SYMTYPE, linkname="s0.jpg")
        _add(tf, "sub/s2.seg.jpg", b"two dots")  # key "sub/s2", extension "seg.jpg"
        if fmt != tarfile.USTAR_FORMAT:
            _add(tf, "ünïcode.jpg", b"utf-8 name")
        _add(tf, long_dir[:150] + "s3.jpg", b"a long name" * 100)  # ustar: prefix + name; GNU: ././@LongLink
        _add(tf, "noext", b"no extension: no sample")
        _add(tf, "s4.cls", b"")  # an empty member
    theirs = webdataset_samples(path)
    assert len(theirs) >= 5 and ours(path) == theirs


def test_compressed_streams_are_read_as_tarfile_reads_them(shards: Path, tmp_path: Path):
    url = load_manifest(str(shards)).train.urls[0]
    packed = tmp_path / "shard.tar.gz"
    packed.write_bytes(gzip.compress(Path(url).read_bytes()))
    assert ours(packed) == webdataset_samples(packed) == webdataset_samples(Path(url))


def _header_offsets(path: str) -> list[int]:
    with tarfile.open(path) as tf:
        return [m.offset for m in tf]


def test_damage_is_refused(shards: Path, tmp_path: Path):
    url = load_manifest(str(shards)).train.urls[0]
    raw, second = Path(url).read_bytes(), _header_offsets(url)[1]
    cases = {
        "bad header checksum": raw[:second + 10] + bytes([raw[second + 10] ^ 0x01]) + raw[second + 11:],
        "truncated header": raw[:second + 100],
        "unexpected end of data": raw[:second + 512 + 10],
        "empty file": b"",
    }
    for why, blob in cases.items():
        path = tmp_path / "bad.tar"
        path.write_bytes(blob)
        with pytest.raises(tarstream.TarError, match=why):
            ours(path)
        if why in ("bad header checksum", "truncated header"):
            # tarfile ends the archive there without a word; webdataset yields what came before, here a
            # sample without its image. Only the manifest's shard length would catch it.
            assert [k for k, _ in webdataset_samples(path)] == [ours(Path(url))[0][0]]
        else:
            with pytest.raises(tarfile.ReadError, match=why):
                webdataset_samples(path)
    duplicate = tmp_path / "dup.tar"
    with tarfile.open(duplicate, "w") as tf:
        _add(tf, "a.jpg", b"1")
        _add(tf, "a.JPG", b"2")
    with pytest.raises(tarstream.TarError, match="a second 'jpg'"):
        ours(duplicate)


def test_a_tar_cut_between_members_ends_there_as_with_tarfile(shards: Path, tmp_path: Path):
    """As tarfile, a stream that stops between two members just ends; the loader's count check catches it."""
    url = load_manifest(str(shards)).train.urls[0]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(Path(url).read_bytes()[:_header_offsets(url)[6]])  # 3 samples of 2 members
    assert ours(cut) == webdataset_samples(cut) and len(ours(cut)) == 3
