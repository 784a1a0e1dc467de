"""Read an offline W&B run file (`run-<id>.wandb`) back into its protobuf records.

wandb ships no reader for these files, so this is the format, written out: a 7-byte W&B header, then
a LevelDB-style log in 32 KiB blocks whose chunks carry a 7-byte header (crc32, length, type).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

HEADER_LEN = 7
BLOCK_LEN = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    if data[:3] != b":W&":
        raise ValueError(f"{path} is not a W&B run file (header {data[:HEADER_LEN]!r})")
    records, pending, pos = [], b"", HEADER_LEN
    while pos + 7 <= len(data):
        left_in_block = BLOCK_LEN - pos % BLOCK_LEN
        if left_in_block < 7:  # block trailer: zero padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if len(chunk) < length:  # the torn tail of a killed writer
            break
        if kind in (FULL, FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def history(path: Path) -> list[dict]:
    """The rows passed to `wandb.log`, as dicts of decoded values."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def run_ids(path: Path) -> set[str]:
    return {r.run.run_id for r in read_records(path) if r.WhichOneof("record_type") == "run"}
