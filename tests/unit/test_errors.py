"""The error table (trainer/errors.py): each error's exit status, and an error's first line for logs."""

from __future__ import annotations

from trainer import errors


def test_each_error_has_its_documented_exit_status():
    assert errors.status_for(KeyboardInterrupt()) == errors.EXIT_INTERRUPTED == 130
    assert errors.status_for(errors.CheckpointWriteError("disk full")) == errors.EXIT_CHECKPOINT == 5
    for usage in (errors.ConfigError, errors.DataError, errors.CheckpointError, errors.LockedError):
        assert errors.status_for(usage("x")) == errors.EXIT_USAGE == 2
    assert errors.status_for(RuntimeError("a bug")) == errors.EXIT_ERROR == 1


def test_an_errors_first_line_is_its_message_or_its_type():
    assert errors.first_line(OSError("\n  No space left on device\nmore detail\n")) == "No space left on device"
    assert errors.first_line(RuntimeError("")) == "RuntimeError"
    assert errors.first_line(ValueError("x" * 500), limit=10) == "x" * 10
