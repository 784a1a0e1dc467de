"""`data.root` beyond a local folder: a `pipe:` command (prefix or `{name}` template) and fsspec URLs
read the same manifest and the same samples as the local path; a root that cannot be read says why.
"""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from trainer.data import storage
from trainer.data.loader import _read
from trainer.data.manifest import Manifest, Split, load_manifest
from trainer.errors import DataError


def test_join_for_paths_commands_urls_and_templates():
    assert storage.join("/data/imagenet", "train/a.tar") == "/data/imagenet/train/a.tar"
    assert storage.join("pipe:cat /data/imagenet/", "train/a.tar") == "pipe:cat /data/imagenet/train/a.tar"
    assert (storage.join("pipe:aws s3 cp s3://bucket/imagenet/{name} -", "train/a.tar")
            == "pipe:aws s3 cp s3://bucket/imagenet/train/a.tar -")
    assert storage.join("s3://bucket/imagenet", "_info.json") == "s3://bucket/imagenet/_info.json"
    assert [storage.is_local(r) for r in ("/data", "rel/dir", "pipe:cat /data", "gs://b/x", "/x/{name}")] == [
        True, True, False, False, False]


def samples(split: Split) -> list[tuple[str, int]]:
    return [(s.key, s.label) for s in _read(split, list(range(len(split.urls))), None)]


@pytest.fixture(scope="module")
def local(shards: Path) -> tuple[Manifest, list[tuple[str, int]]]:
    manifest = load_manifest(str(shards))
    return manifest, samples(manifest.train)


@pytest.mark.parametrize("template", ["pipe:cat {root}", "pipe:cat {root}/{{name}}", "local://{root}"],
                         ids=["pipe-prefix", "pipe-template", "fsspec-local"])
def test_remote_style_roots_read_the_same_dataset(shards: Path, local, template: str):
    want_manifest, want_samples = local
    root = template.format(root=shards)
    manifest = load_manifest(root)
    assert manifest.class_names == want_manifest.class_names
    assert manifest.train.lengths == want_manifest.train.lengths
    assert all(not storage.is_local(u) and u.startswith(template.split("{")[0]) for u in manifest.train.urls)
    got = samples(manifest.train)
    assert got == want_samples and len(got) == want_manifest.train.num_samples


def test_fsspec_memory_filesystem_as_object_storage(shards: Path, local):
    # fsspec's in-memory filesystem stands in for a bucket: same code path as s3:// with s3fs installed.
    fs = fsspec.filesystem("memory")
    for path in shards.rglob("*"):
        if path.is_file():
            fs.pipe(f"/bucket/imagenet/{path.relative_to(shards)}", path.read_bytes())
    manifest = load_manifest("memory://bucket/imagenet")
    assert samples(manifest.train) == local[1]


@pytest.mark.parametrize("root, says", [
    ("pipe:cat /nonexistent/imagenet", "a shell command"),
    ("nosuchscheme://bucket/imagenet", "neither webdataset nor fsspec"),
    ("memory://no/such/bucket", "read through fsspec"),
])
def test_unreadable_roots_name_the_manifest_and_how_it_is_read(root: str, says: str):
    with pytest.raises(DataError) as e:
        load_manifest(root)
    assert f"{root}/_info.json" in str(e.value) and says in str(e.value)
