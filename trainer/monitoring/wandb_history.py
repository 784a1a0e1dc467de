"""What a W&B run holds, read back from W&B's own files: for logging again what a kill lost.

wandb ships no reader for its transaction log (`run-<id>.wandb`), so the format is written out here: a
7-byte W&B header, then a LevelDB-style log in 32 KiB blocks whose chunks carry a 7-byte header (crc32,
length, type). The tests read W&B's files with the same reader. Torch-free.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STEP_KEY = "trainer/step"  # every chart's x-axis: a resume from an older checkpoint is drawn, not dropped


def held_rows(wandb_dir: Path, run_id: str, skip: Path | None = None,
              online_below: int | None = None) -> Counter:
    """What W&B holds of run `run_id`: a count per row (`signature`) in its files under `wandb_dir`.

    Offline segments (`offline-run-*`) count whole: `wandb sync` uploads exactly what they hold. An
    online segment's row counts only below `online_below` (the server's next `_step` when this start is
    online): the server, not the local file, is what the dashboard shows. `skip`: this start's segment.
    """
    held: Counter = Counter()
    for path in sorted(wandb_dir.glob(f"*/run-{run_id}.wandb")):
        if not path.parent.name.startswith(("run-", "offline-run-")) or path.parent.is_symlink():
            continue  # latest-run: a link to one of the others
        if skip is not None and path.parent.resolve() == skip.resolve():
            continue
        online = not path.parent.name.startswith("offline-")
        for row in history(path):
            if STEP_KEY not in row or (online and online_below is not None and row.get("_step", 0) >= online_below):
                continue
            held[signature(row.pop(STEP_KEY), metrics_of(row))] += 1
    return held


def metrics_of(row: dict[str, Any]) -> dict[str, Any]:
    """A W&B history row as metrics.jsonl holds it: W&B's own keys (`_step`, ...) left out, and so are media
    values (an image, a table such as val/worst_classes: nested keys beside `<key>/_type`), which only W&B keeps."""
    media = tuple(k[:-len("_type")] for k in row if k.endswith("/_type"))
    return {k: v for k, v in row.items() if not k.startswith("_") and not (media and k.startswith(media))}


def history(path: Path) -> Iterator[dict[str, Any]]:
    """The rows passed to `wandb.log` in one W&B file, as dicts of decoded values."""
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            yield {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}


def read_records(path: Path) -> Iterator[Any]:
    """The protobuf `Record`s of a W&B transaction log (`run-<id>.wandb`), up to its last intact one.

    The format: a 7-byte header (`:W&B`, magic, version), then a LevelDB log: 32 KiB blocks of chunks,
    each with a 7-byte header (crc32 of type and data, length, type FULL/FIRST/MIDDLE/LAST). A killed
    writer leaves a torn tail; reading stops at the first chunk that is cut short or fails its crc.
    """
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B"[:len(data)]:  # shorter: killed before its header was written, holds nothing
        raise ValueError(f"{path} is not a W&B transaction log")
    pending, pos = b"", 7
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's zero-padded trailer
            pos += 32768 - pos % 32768
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) != crc or kind not in (1, 2, 3, 4):
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # generated protobuf
            record.ParseFromString(pending)
            yield record


def signature(step: Any, metrics: dict[str, Any]) -> tuple:
    # One row's identity across metrics.jsonl and W&B: its step and values, compared as JSON text.
    # W&B writes a whole float as an integer (1.0 -> 1), so those compare as integers on both sides.
    def canonical(v: Any) -> str:
        return json.dumps(int(v) if isinstance(v, float) and v.is_integer() else v, sort_keys=True)

    return step, tuple(sorted((k, canonical(v)) for k, v in metrics.items()))
