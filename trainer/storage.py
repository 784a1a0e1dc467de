"""Where the shards live: `data.root` as a local or shared-filesystem path, a `pipe:` command, or a URL.

`join` turns the root and a name from `_info.json` into something `webdataset.gopen` opens. URL schemes
that webdataset does not handle itself (s3://, gcs://, az://, memory://, ...) are opened through fsspec.
"""

from __future__ import annotations

import importlib
import os
from urllib.parse import urlparse

# The module, not the function of the same name that `webdataset` exports.
wds_gopen = importlib.import_module("webdataset.gopen")

NAME = "{name}"  # placeholder in a root that is a template, e.g. "pipe:aws s3 cp s3://b/imagenet/{name} -"


def is_local(root: str) -> bool:
    """A plain path (local disk or a mounted shared filesystem), not a command or a URL."""
    return not root.startswith("pipe:") and "://" not in root and NAME not in root


def join(root: str, name: str) -> str:
    """The URL of `name` (relative to the dataset root, e.g. "train/x-000000.tar") under `root`.

    A root holding "{name}" is a template; any other command or URL gets "/name" appended, which
    suits commands whose last argument is the path (`pipe:cat /data/imagenet`).
    """
    if NAME in root:
        return root.replace(NAME, name)
    if is_local(root):
        return os.path.join(root, name)
    return f"{root.rstrip('/')}/{name}"


def describe(root: str) -> str:
    """A short hint on how `root` is read, for error messages."""
    if root.startswith("pipe:"):
        return "a shell command; run it by hand with a shard name to see its error"
    scheme = urlparse(root).scheme
    if not scheme:
        return "a path on this machine or a mounted shared filesystem"
    handler = wds_gopen.gopen_schemes.get(scheme)
    if handler is None:
        return f"a {scheme}:// URL, a scheme that neither webdataset nor fsspec knows"
    if handler is not _gopen_fsspec:
        return f"a {scheme}:// URL, read by webdataset's own {scheme} handler"
    return f"a {scheme}:// URL, read through fsspec (which needs its backend installed, e.g. s3fs for s3://)"


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw) -> object:
    import fsspec  # a dependency of torch; imported only when a URL needs it

    return fsspec.open(url, mode).open()


def _register_fsspec() -> None:
    # webdataset dispatches on the URL scheme through this table (its documented extension point);
    # schemes it already handles (pipe, http, gs, ...) keep their handler. Done at import time, so the
    # DataLoader's worker processes have it too.
    try:
        import fsspec
    except ImportError:  # pragma: no cover - torch depends on fsspec
        return
    for scheme in fsspec.available_protocols():
        wds_gopen.gopen_schemes.setdefault(scheme, _gopen_fsspec)


_register_fsspec()
