"""Where the shards live: `data.root` as a local or shared-filesystem path, a `pipe:` command, or a URL.

`join` turns the root and a name from `_info.json` into something `webdataset.gopen` opens. URL schemes
that webdataset does not handle itself (s3://, gcs://, az://, memory://, ...) are opened through fsspec.
The root is trusted (the command line or a config file); names come from data, so `join` takes only
plain relative names (`is_safe_name`) and shell-quotes them before they go into a `pipe:` command.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
from urllib.parse import urlparse

# The module, not the function of the same name that `webdataset` exports.
wds_gopen = importlib.import_module("webdataset.gopen")

NAME = "{name}"  # placeholder in a root that is a template, e.g. "pipe:aws s3 cp s3://b/imagenet/{name} -"


# One path component: starts with a letter, digit or "_" (so never "-option", "." or ".."), then only
# characters that mean nothing to a shell, a URL or a glob.
_COMPONENT = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
_SAFE_NAME = re.compile(rf"{_COMPONENT}(/{_COMPONENT})*")


def is_local(root: str) -> bool:
    """A plain path (local disk or a mounted shared filesystem), not a command, a URL or a template.

    Exactly what `webdataset.gopen` opens as a file: no URL scheme at all (`http:x` without "//" is a
    URL to gopen, and `pipe:` a shell command), and no "{name}" placeholder.
    """
    return not urlparse(root).scheme and not root.startswith("pipe:") and NAME not in root


def is_safe_name(name: object) -> bool:
    """A plain relative file name such as "train/imagenet-train-000000.tar": no absolute path, no ".."
    or "." component, no leading "-", only letters, digits and "._-/" (nothing a shell would expand)."""
    return isinstance(name, str) and _SAFE_NAME.fullmatch(name) is not None


def join(root: str, name: str) -> str:
    """The URL of `name` (relative to the dataset root, e.g. "train/x-000000.tar") under `root`.

    A root holding "{name}" is a template; any other command or URL gets "/name" appended, which
    suits commands whose last argument is the path (`pipe:cat /data/imagenet`). `name` comes from a
    manifest, so it must be `is_safe_name` (ValueError otherwise) and is shell-quoted for a `pipe:` root.
    """
    if not is_safe_name(name):
        raise ValueError(f"{name!r} is not a plain relative file name; refusing to open it under {root!r}")
    if root.startswith("pipe:"):
        name = shlex.quote(name)  # a no-op for safe names today; it stays right if the character set grows
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
