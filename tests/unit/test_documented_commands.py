"""Every `python -m ...` command the README and docs/ show still exists: each answers `--help` (data_prep's
subcommands each their own), so a module moved or renamed without its docs fails here."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from helpers.common import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROJECT = ("trainer", "data_prep", "bench")  # python -m torch.distributed.run / pytest are not ours
SUBCOMMANDS = {"data_prep": {"synthetic", "folder", "imagenet", "verify", "merge"}}


def documented() -> set[tuple[str, ...]]:
    """(module,) or (module, subcommand) for every `python -m` line of the docs."""
    found: set[tuple[str, ...]] = set()
    for doc in DOCS:
        for module, word in re.findall(r"python -m ([A-Za-z_][\w.]*)(?:\s+([a-z_]+))?", doc.read_text()):
            if module.split(".")[0] in PROJECT:
                found.add((module, word) if word in SUBCOMMANDS.get(module, ()) else (module,))
    return found


def test_every_documented_command_answers_help():
    commands = sorted(documented())
    assert ("trainer",) in commands and ("trainer.evaluate",) in commands and ("data_prep", "imagenet") in commands

    def run(command: tuple[str, ...]) -> tuple[tuple[str, ...], subprocess.CompletedProcess]:
        return command, subprocess.run([sys.executable, "-m", *command, "--help"], cwd=ROOT, capture_output=True,
                                       text=True, timeout=120)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, commands))
    broken = [f"python -m {' '.join(c)} --help: exit {p.returncode}\n{p.stderr[-500:]}"
              for c, p in results if p.returncode != 0 or "usage" not in p.stdout.lower()]
    assert not broken, "\n".join(broken)
