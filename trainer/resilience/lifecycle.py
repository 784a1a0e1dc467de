"""How a trainer process ends: its exit statuses, the error that decides one, and a way out that cannot hang.

Every failure becomes a status from the table in trainer/errors.py on the rank that saw it, logged once. The process
then leaves with `exit()`, which never waits on anything it does not control: DataLoader workers die
with their rank (PR_SET_PDEATHSIG), and ranks leave when their launcher is gone (`watch_launcher`).
docs/fault_tolerance.md has the same table, with what the user sees.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import sys
import threading
import time

from trainer.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_LAUNCHER_GONE, EXIT_OK, EXIT_PREEMPTED, status_for

log = logging.getLogger("trainer")

_NORMAL_EXIT_GRACE_S = 10.0  # the atexit hooks may take this long after a clean run


def exit(status: int) -> None:  # noqa: A001 - the process's way out, like sys.exit
    """Leave the process with `status`, within seconds whatever is still running.

    A clean run (0, 75) runs the atexit hooks (the libraries' clean-ups: torch.compile's worker pool,
    W&B's service, logging), under a watchdog in case one of them blocks, then skips the interpreter's
    teardown of its module graph, which costs ~1 s per process with torch and torchvision loaded and
    does nothing useful. A failed run leaves at once: multiprocessing's exit hook joins DataLoader
    workers without a timeout, which is how an error used to hang a rank forever, and nothing left to do
    after an error is worth waiting for (the logger and W&B were closed on the way out of the loop).
    """
    if status in (EXIT_OK, EXIT_PREEMPTED):
        watchdog = threading.Timer(_NORMAL_EXIT_GRACE_S, os._exit, args=(status,))
        watchdog.daemon = True
        watchdog.start()
        atexit._run_exitfuncs()  # what sys.exit would run, minus the teardown
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def status_of(error: BaseException, rank: int) -> int:
    """Log `error` once, as the user should read it, and return its exit status (errors.STATUS_OF)."""
    status = status_for(error)
    if status == EXIT_INTERRUPTED:
        log.error("rank %d: interrupted, stopped at once without saving; the newest checkpoint is intact", rank)
    elif status == EXIT_ERROR:
        log.error("rank %d: unexpected error; every rank stops (status %d). The newest checkpoint is intact: "
                  "run the same command to resume once the cause is fixed.", rank, EXIT_ERROR, exc_info=error)
    else:
        log.error("rank %d: %s", rank, _worker_message(error))
    return status


def _worker_message(error: BaseException) -> str:
    # A DataLoader re-raises a worker's exception with the worker's traceback in its text; our own
    # errors say everything in their last line.
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


_launcher: int | None = None  # torchrun's pid, once watch_launcher runs


def watch_launcher(rank: int, poll_s: float = 1.0) -> None:
    """Under torchrun, leave with EXIT_LAUNCHER_GONE within `poll_s` of the launcher's death.

    torchrun starts each rank in a session of its own, so when its agent is SIGKILLed (the OOM killer, a
    scheduler killing the job) nothing signals the ranks: they would keep training and writing into
    run.dir while the resubmitted job starts. A rank whose parent changed has lost its launcher.
    """
    global _launcher
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    _launcher = os.getppid()

    def watch() -> None:
        while not launcher_gone():
            time.sleep(poll_s)
        exit(left_by_launcher(rank))

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def launcher_gone() -> bool:
    """Whether the torchrun that started this rank has died (a peer that saw it first may have left already)."""
    return _launcher is not None and os.getppid() != _launcher


_reported = threading.Lock()  # held once the launcher's death is logged: the watcher and the loop may both see it


def left_by_launcher(rank: int) -> int:
    """Report the launcher's death (once per process, whoever sees it first) and give its exit status."""
    if _reported.acquire(blocking=False):
        log.error("rank %d: the launcher (torchrun, pid %d) is gone; exiting now without saving, so that a "
                  "restarted job can take over run.dir (the newest checkpoint is intact)", rank, _launcher)
    return EXIT_LAUNCHER_GONE


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent (pid `parent`, read before the fork) dies
    (Linux; elsewhere a no-op).

    For DataLoader workers: they ignore stop signals (only their rank decides when to stop), so without
    this a worker could outlive a rank that was killed or left through `exit`."""
    if not sys.platform.startswith("linux"):
        return
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request was in place (even before we ran)
        os._exit(EXIT_LAUNCHER_GONE)
