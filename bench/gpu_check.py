"""The device check: everything the GPU path claims, measured in one command on a machine with one GPU and
no network, in under 9 minutes. Each step runs in its own process under its own timeout, so a failure or a
hang never stops the rest; each writes one JSON line (step, status ok|skipped|failed|timeout, seconds,
figures) to stdout and to --out. Steps that need CUDA are skipped on a CPU, and say so.

    python -m bench.gpu_check --out gpu_check.jsonl            # on the GPU machine
    python -m bench.gpu_check --device cpu --quick --out x.jsonl  # the same steps, tiny, on a CPU (a test)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The modern recipe's per-sample and per-step work (configs/alexnet_modern.yaml): TrivialAugment and random
# erasing (applied on the device under data.decode=gpu), Mixup/CutMix, label smoothing and the EMA
RECIPE = ("data.auto_augment=trivialaugment", "data.random_erasing=0.1", "mix.mixup_alpha=0.2",
          "mix.cutmix_alpha=1.0", "train.label_smoothing=0.1", "train.ema_decay=0.999")
ENV_CODE = """import json, subprocess, torch, torchvision
try:
    import torchcodec; tc = torchcodec.__version__
except Exception as e: tc = f"unavailable: {e}"
cuda = torch.cuda.is_available()
drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                     text=True).stdout.strip() if cuda else None
print(json.dumps({"gpu": torch.cuda.get_device_name() if cuda else None, "driver": drv, "torch": torch.__version__,
    "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
    "torchvision": torchvision.__version__, "torchcodec": tc}))"""


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def _metrics(run_dir: Path) -> dict:
    """Training throughput and data wait from a run's metrics.jsonl (the steps after the first)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    img = [r["perf/images_per_s"] for r in rows if "perf/images_per_s" in r][1:]
    wait = [r["perf/data_wait_fraction"] for r in rows if "perf/data_wait_fraction" in r][1:]
    steps = max((r.get("step", 0) for r in rows), default=0)
    return {"images_per_s": sum(img) / len(img) if img else None,
            "data_wait_fraction": sum(wait) / len(wait) if wait else None, "steps": steps}


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.cuda = args, args.device == "cuda"
        self.work = Path(args.work or tempfile.mkdtemp(prefix="gpu_check-"))
        self.shards = self.work / "shards"
        self.out = open(args.out, "a") if args.out else None
        self.env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "disabled",
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "4")}

    def emit(self, row: dict) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        if self.out:
            self.out.write(line + "\n")
            self.out.flush()

    def proc(self, cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run a step's command in its own process group; on timeout the whole group is killed."""
        p = subprocess.Popen(cmd, cwd=ROOT, env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise
        return subprocess.CompletedProcess(cmd, p.returncode, out, "")

    def step(self, name: str, timeout: float, body: Callable[[float], dict], cuda_only: bool = False,
             skip: str | None = None) -> None:
        t0 = time.perf_counter()
        row: dict = {"step": name}
        if cuda_only and not self.cuda:
            row.update(status="skipped", reason="needs a CUDA device (this run: --device cpu)", figures={})
        elif skip:
            row.update(status="skipped", reason=skip, figures={})
        else:
            try:
                row.update(status="ok", figures=body(timeout))
            except subprocess.TimeoutExpired:
                row.update(status="timeout", reason=f"over its {timeout:.0f} s", figures={})
            except Exception as e:  # noqa: BLE001 - one failing step must not stop the others
                row.update(status="failed", reason=f"{type(e).__name__}: {str(e)[-2000:]}", figures={})
        row["seconds"] = round(time.perf_counter() - t0, 2)
        self.emit(row)

    def _py_step(self, args: list[str], timeout: float) -> dict:
        return self.py(args, timeout)

    def py(self, args: list[str], timeout: float, env: dict | None = None) -> dict:
        p = self.proc([sys.executable, *args], timeout, env)
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {p.stdout[-1500:]}")
        return _last_json(p.stdout)

    def trainer(self, run: Path, *overrides: str, torchrun: bool = True) -> list[str]:
        a = self.args
        model = ["model.name=tiny_cnn", "data.image_size=32", "data.eval_resize=36", "train.batch_size=8"] \
            if a.quick else ["model.name=alexnet", "model.channels_last=true", "train.batch_size=256"]
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"] if torchrun else []
        return [*launcher, "-m", "trainer", "--config",
                str(ROOT / "configs" / "smoke_cpu.yaml"), f"data.root={self.shards}", f"run.dir={run}",
                f"device={a.device}", f"data.workers={2 if a.quick else 8}", "data.shuffle_buffer=64",
                "train.log_every=1", "wandb.mode=disabled", "train.epochs=1", *model, *overrides]

    # ---- the steps ---------------------------------------------------------------------------------------

    def run(self) -> None:
        a, q = self.args, self.args.quick
        self.step("env", 60, lambda t: self.py(["-c", ENV_CODE], t))
        self.step("matmul_peak", 60, lambda t: self.py(
            ["-m", "bench.matmul_peak", "--device", a.device, *(["--n", "256", "--iters", "2"] if q else [])], t))
        for path in ("old", "new"):
            race = ["-m", "bench.decode_race", "--path", path, "--iters", "20" if q else "200"]
            self.step(f"decode_race_{path}", 60, functools.partial(self._py_step, race), cuda_only=True)
        small = ["--model", "tiny_cnn", "--image-size", "32"] if q else []
        self.step("gpu_step_eager", 120, lambda t: self._gpu_step(["--no-compile", *small], t))
        self.step("gpu_step_compiled", 240, lambda t: self._gpu_step(small, t),
                  skip="compiling on a CPU takes minutes, more than --quick allows (tests/process/"
                  "test_no_recompiles.py compiles on the CPU)" if q and not self.cuda else None)
        self.step("shards", 120, self._shards)
        self.step("train_decode_cpu", 150, lambda t: self._train("cpu", t))
        self.step("train_decode_gpu", 150, lambda t: self._train("gpu", t), cuda_only=True)
        self.step("train_recipe", 150, lambda t: self._train("gpu" if self.cuda else "cpu", t, *RECIPE))
        self.step("fp16_40_steps", 120, self._fp16, cuda_only=True)
        self.step("sigterm_resume", 150, self._sigterm_resume)
        self.step("evaluate", 90, self._evaluate)

    def _gpu_step(self, extra: list[str], timeout: float) -> dict:
        quick = ["--quick"] if self.args.quick else []
        r = self.py(["-m", "bench.gpu_step", "--device", self.args.device, "--fast-only", *quick, *extra], timeout)
        return {"measured_bf16_tflops": r.get("measured_bf16_tflops"), "rows": [
            {k: row[k] for k in ("batch", "amp", "channels_last", "compile", "img_s", "peak_fraction",
                                 "measured_peak_fraction", "error")} for row in r.get("rows", [])]}

    def _shards(self, timeout: float) -> dict:
        per_class = ("12", "3") if self.args.quick else ("200", "20")
        images = self.work / "images"
        self.py(["-m", "data_prep", "synthetic", "--out", str(images), "--classes", "4" if self.args.quick else "10",
                 "--train-per-class", per_class[0], "--val-per-class", per_class[1]], timeout / 2)
        self.py(["-m", "data_prep", "folder", "--train", str(images / "train"), "--val", str(images / "val"),
                 "--out", str(self.shards), "--shard-size", "16" if self.args.quick else "200"], timeout / 2)
        return {"shards": str(self.shards)}

    def _train(self, decode: str, timeout: float, *recipe: str) -> dict:
        run = self.work / f"train-{decode}{'-recipe' if recipe else ''}"
        self.py(self.trainer(run, f"data.decode={decode}", *recipe), timeout)
        figures = _metrics(run)
        if recipe:  # the EMA was validated beside the weights
            val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "val_ema/" in line]
            figures["val_ema/top1"] = val[-1]["val_ema/top1"] if val else None
        return figures

    def _fp16(self, timeout: float) -> dict:
        run = self.work / "fp16"
        # 2,000 training images / 32 = 62 steps in one epoch (--quick: 48 / 8 = 6 per epoch, 7 epochs)
        self.py(self.trainer(run, "amp=fp16", "train.batch_size=32" if not self.args.quick else "train.epochs=7"),
                timeout)
        figures = _metrics(run)
        if figures["steps"] < 40:
            raise RuntimeError(f"only {figures['steps']} fp16 steps ran")
        return figures

    def _sigterm_resume(self, timeout: float) -> dict:
        run, deadline = self.work / "sigterm", time.monotonic() + timeout
        cmd = [sys.executable, *self.trainer(run, "train.epochs=2", torchrun=False)]  # its own exit status
        env = {**self.env, "TRAINER_TEST_STEP_DELAY": "0.1"}  # slow steps: the signal lands mid-run
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        try:
            while not (run / "metrics.jsonl").exists() or _metrics(run)["steps"] < 2:
                if time.monotonic() > deadline or p.poll() is not None:
                    raise RuntimeError(f"no step 2 before the signal (exit {p.poll()})")
                time.sleep(0.2)
            os.killpg(p.pid, signal.SIGTERM)  # as SLURM or a terminal would: the whole group
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        stopped_at = _metrics(run)["steps"]
        if p.returncode != 75:  # trainer.errors.EXIT_PREEMPTED: saved, try again
            raise RuntimeError(f"the stopped run exited {p.returncode}, not 75: {out[-1500:]}")
        again = self.proc(cmd, max(1.0, deadline - time.monotonic()))
        if again.returncode != 0:
            raise RuntimeError(f"the resumed run exited {again.returncode}: {again.stdout[-1500:]}")
        return {"first_exit": p.returncode, "stopped_at_step": stopped_at, "final_step": _metrics(run)["steps"],
                "resumed": "resumed from" in again.stdout}

    def _evaluate(self, timeout: float) -> dict:
        ckpts = sorted((self.work / "sigterm" / "checkpoints").glob("step-*.pt")) or \
            sorted((self.work / "train-cpu" / "checkpoints").glob("step-*.pt"))
        if not ckpts:
            raise RuntimeError("no checkpoint from the training steps to evaluate")
        return self.py(["-m", "trainer.evaluate", "--checkpoint", str(ckpts[-1]), f"data.root={self.shards}",
                        f"device={self.args.device}"], timeout)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="tiny sizes everywhere: a check that every step runs")
    p.add_argument("--out", help="also append the JSON lines to this file")
    p.add_argument("--work", help="scratch directory (default: a new temporary one)")
    Check(p.parse_args(argv)).run()


if __name__ == "__main__":
    main()
