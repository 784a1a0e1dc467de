"""A compiled run trains and validates two epochs without one recompile (TORCH_LOGS=recompiles): training
batches are full, and validation runs the uncompiled module on batches padded to the local batch size.
Most of its time is tiny_cnn's compilation on the CPU (about 20-50 s on an idle core, ~2 min on a busy one).
"""

from __future__ import annotations

import json
import subprocess
import sys

from trainer.start import STEP_DELAY_ENV

from helpers.common import ROOT
from helpers.resilience_procs import ENV, trainer_args


def test_a_compiled_run_validates_without_recompiling(shards, tmp_path):
    run = tmp_path / "run"
    env = {**ENV, "TORCH_LOGS": "recompiles"}
    env.pop(STEP_DELAY_ENV, None)  # no sleeps: nothing here acts at a chosen step
    proc = subprocess.run([sys.executable, *trainer_args(shards, run, "model.compile=true")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=420)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    vals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "val/top1" in r]
    assert len(vals) == 2  # both epochs validated
    assert "Recompiling function" not in out, [line for line in out.splitlines() if "ecompil" in line]
