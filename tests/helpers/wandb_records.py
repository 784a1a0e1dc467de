"""Read an offline W&B run file (`run-<id>.wandb`) back into its protobuf records and history rows.

The reader is the trainer's own (trainer/monitoring/wandb_history.py: wandb ships none), so tests and the
replay of lost rows read W&B's files alike.
"""

from __future__ import annotations

from pathlib import Path

from wandb.proto import wandb_internal_pb2

from trainer.monitoring import wandb_history


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    return list(wandb_history.read_records(path))


def history(path: Path) -> list[dict]:
    """The rows passed to `wandb.log`, as dicts of decoded values."""
    return list(wandb_history.history(path))


def run_ids(path: Path) -> set[str]:
    return {r.run.run_id for r in read_records(path) if r.WhichOneof("record_type") == "run"}
