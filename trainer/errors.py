"""The errors a run can end with, the exit status each one gives, and `first_line` for log lines.

Standard library only, imported by every layer: an error class lives here, not beside the code that
raises it, so that deciding an exit status (resilience/lifecycle.py) imports nothing heavy and no
module imports another just for its error type. docs/fault_tolerance.md has the same table.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # an unexpected error (a bug, CUDA out of memory, ...): the traceback is in the log
EXIT_USAGE = 2  # a config, dataset or run.dir problem, named in one line with the fix
EXIT_NONFINITE = 3  # the loss became inf/NaN; the newest checkpoint is the last good state
EXIT_PEER_FAILED = 4  # another rank failed or hung (run.timeout_minutes): its own log says why
EXIT_CHECKPOINT = 5  # a checkpoint could not be written (disk full, permissions); the previous one is intact
EXIT_LAUNCHER_GONE = 6  # torchrun (the launcher) died, e.g. SIGKILLed: the rank left without saving
EXIT_PREEMPTED = 75  # a stop request (SIGTERM, SIGUSR1, Ctrl-C) was honoured: saved; EX_TEMPFAIL, "try again"
EXIT_INTERRUPTED = 130  # a second Ctrl-C: stopped at once, without saving (128 + SIGINT)


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key and the fix."""


class DataError(RuntimeError):
    """The dataset is missing or does not match what the run asks of it."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions); the ones already on disk are intact."""


class LockedError(RuntimeError):
    """A folder (run.dir, data_prep's --out) is held by another live process; the message names it."""


# The first matching entry decides: CheckpointWriteError before the errors that are the user's to fix.
STATUS_OF: tuple[tuple[type[BaseException], int], ...] = (
    (KeyboardInterrupt, EXIT_INTERRUPTED),
    (CheckpointWriteError, EXIT_CHECKPOINT),
    (ConfigError, EXIT_USAGE),
    (DataError, EXIT_USAGE),
    (CheckpointError, EXIT_USAGE),
    (LockedError, EXIT_USAGE),
)


def status_for(error: BaseException) -> int:
    """The exit status `error` ends a run with (EXIT_ERROR for anything not in the table)."""
    return next((status for kind, status in STATUS_OF if isinstance(error, kind)), EXIT_ERROR)


def first_line(error: BaseException, limit: int = 300) -> str:
    """An error's message in one line, for log lines that go on after it (its type name if it has none)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]
