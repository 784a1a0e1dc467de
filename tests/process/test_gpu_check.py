"""bench.gpu_check end to end on the CPU (--device cpu --quick), so that the device check cannot rot before
a GPU runs it: every step reports one JSON line with a status, only the CUDA-only steps (and the compiled
step, too slow on a CPU) are skipped, saying why, and the CPU steps' figures are real.
"""

from __future__ import annotations

import json

from helpers.common import run_module

CUDA_ONLY = {"decode_race_old", "decode_race_new", "train_decode_gpu", "fp16_40_steps"}


def test_the_device_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "check.jsonl"
    proc = run_module("bench.gpu_check", "--device", "cpu", "--quick", "--out", str(out), "--work",
                      str(tmp_path / "work"), timeout=400)
    rows = {r["step"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert [json.loads(line)["step"] for line in proc.stdout.splitlines() if line.startswith("{")] == list(rows)
    assert all({"step", "status", "seconds", "figures"} <= set(r) for r in rows.values())
    skipped = {name for name, r in rows.items() if r["status"] == "skipped"}
    assert skipped == CUDA_ONLY | {"gpu_step_compiled"}, rows
    assert all("CUDA" in rows[n]["reason"] for n in CUDA_ONLY) and "CPU" in rows["gpu_step_compiled"]["reason"]
    assert {r["status"] for n, r in rows.items() if n not in skipped} == {"ok"}, rows
    assert rows["env"]["figures"]["torch"].startswith("2.")
    assert rows["matmul_peak"]["figures"]["bf16_matmul_tflops"] > 0
    assert rows["gpu_step_eager"]["figures"]["rows"][0]["img_s"] > 0
    assert rows["train_decode_cpu"]["figures"]["images_per_s"] > 0
    assert 0 <= rows["train_decode_cpu"]["figures"]["data_wait_fraction"] <= 1
    resumed = rows["sigterm_resume"]["figures"]
    assert resumed["first_exit"] == 75 and resumed["resumed"] and resumed["final_step"] > resumed["stopped_at_step"]
    assert rows["evaluate"]["figures"]["val/count"] == 12
    recipe = rows["train_recipe"]["figures"]  # augmentation, mixing and the EMA ran, and the EMA was validated
    assert recipe["steps"] == 6 and recipe["images_per_s"] > 0 and 0 <= recipe["val_ema/top1"] <= 1
