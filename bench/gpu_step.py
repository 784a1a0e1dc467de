"""Training-step speed on one device: images/s of the trainer's own step (normalise a uint8 batch,
forward, backward, SGD update) on synthetic batches, side by side in one run across batch sizes,
fp32 vs bf16 autocast, channels_last on/off and torch.compile on/off, each as a ratio to the fp32 /
contiguous / eager baseline, and as fractions of the device's dense bf16 peak: the datasheet's and the
one measured in the same run (bench.matmul_peak). Training FLOPs per image: forward (trainer.model.
flops_per_image) + backward = 2x forward, less the first convolution's input gradient, never computed.
The fast recipe's setting (configs/alexnet_fast.yaml) is measured first; a setting that fails records
its error in its row and the rest go on.

    python -m bench.gpu_step                       # one GPU: the full grid, about 5 minutes on an H200
    python -m bench.gpu_step --device cpu --quick  # the same code path, tiny, on the CPU
    python -m bench.gpu_step --fast-only           # the fast recipe's setting, eager and compiled

Prints a table, then one JSON object as the last line. Stops starting new configurations after
--budget-s seconds, so it fits a fixed device lease (compiling is most of the time).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from bench import matmul_peak
from trainer import optim, step
from trainer.config import ModelConfig, OptimConfig
from trainer.data.transforms import Normalize
from trainer.model import build_model, flops_per_image, maybe_compile, to_memory_format
from trainer.step import autocast_for

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, in TFLOP/s; first match wins.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "H800": 989.0, "GH200": 989.0,
                    "B200": 2250.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


@dataclass(frozen=True)
class Setting:
    batch: int
    amp: str  # "off" (fp32) | "bf16"
    channels_last: bool
    compile: bool
    h2d: bool = False  # the uint8 batch starts in (pinned) host memory and is copied every step, as in training


@dataclass
class Row:
    setting: Setting
    img_s: float | None = None
    step_ms: float | None = None
    tflops: float | None = None
    peak_fraction: float | None = None  # of the datasheet's dense bf16 peak
    measured_peak_fraction: float | None = None  # of the bf16 matmul rate measured in this run
    vs_baseline: float | None = None
    first_step_s: float | None = None  # includes compilation when compile is on
    peak_mem_gib: float | None = None
    error: str | None = None


# configs/alexnet_fast.yaml per GPU: batch 1024 over 8 GPUs, bf16, channels_last, torch.compile
FAST_BATCH = 128


def fast_settings(batch: int, compile_too: bool) -> list[Setting]:
    """The fast recipe's setting, compiled (as it trains) and eager."""
    return [Setting(batch, "bf16", True, c) for c in ((True, False) if compile_too else (False,))]


def plan(batches: list[int], main_batch: int, compile_too: bool, quick: bool, fast_batch: int = FAST_BATCH
         ) -> list[Setting]:
    """The grid, most informative first: the fast recipe's setting, every switch at the main batch size,
    then the other sizes.

    The host-to-device row repeats eager bf16 + channels_last with the copy in the step: the
    difference in ms/step is the copy's cost, the same whatever else the step does.
    """
    switches = [(amp, cl) for amp in ("off", "bf16") for cl in (False, True)]
    grid = [Setting(main_batch, amp, cl, False) for amp, cl in switches]
    if compile_too:  # --quick compiles one setting only: each costs minutes on a CPU
        grid += [Setting(main_batch, amp, cl, True) for amp, cl in (switches[-1:] if quick else switches)]
    grid += [Setting(b, amp, cl, False) for b in batches if b != main_batch for amp, cl in switches]
    grid += [Setting(main_batch, "bf16", True, False, h2d=True)]
    first = fast_settings(fast_batch, compile_too)
    return first + [s for s in grid if s not in first]


def train_flops_per_image(model: nn.Module, image_size: int) -> tuple[int, int]:
    """(forward, training) FLOPs per image. Backward is 2x forward (input and weight gradients) except for
    the first convolution, whose input (the image) needs no gradient: autograd skips that product."""
    forward = flops_per_image(model, image_size)
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    first_conv = 0
    if first is not None:
        shapes: list[torch.Size] = []
        hook = first.register_forward_hook(lambda mod, inp, out: shapes.append(out.shape))
        try:
            flops_per_image(model, image_size)
        finally:
            hook.remove()
        _, c_out, h_out, w_out = shapes[0]
        kh, kw = first.kernel_size
        first_conv = 2 * c_out * h_out * w_out * (first.in_channels // first.groups) * kh * kw
    return forward, 3 * forward - first_conv


def measure(s: Setting, args: argparse.Namespace, device: torch.device, flops_train: int) -> Row:
    """Build a fresh model and optimizer, warm up (compiling if asked), then time steps."""
    torch._dynamo.reset()  # every compiled setting compiles from scratch, as a fresh run would
    torch.manual_seed(0)
    model = to_memory_format(build_model(ModelConfig(name=args.model), 1000).to(device), s.channels_last)
    optimizer = optim.build_optimizer(OptimConfig(lr=0.01), model)
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    run_model = maybe_compile(model, s.compile)
    normalize, autocast = Normalize(device, s.channels_last), autocast_for(device, s.amp)
    gen = torch.Generator().manual_seed(0)
    # NCHW uint8 stored channels-last, like the loader's collate; normalize() moves it when it is on the host
    images = torch.randint(0, 256, (s.batch, args.image_size, args.image_size, 3), dtype=torch.uint8,
                           generator=gen).permute(0, 3, 1, 2)
    targets = torch.randint(0, 1000, (s.batch,), generator=gen).to(device)
    if s.h2d:
        images = images.pin_memory() if device.type == "cuda" else images
    else:
        images = images.to(device)

    def one_step() -> None:
        step.train_step(run_model, [(normalize(images), targets)], [0], optimizer, scaler, criterion, autocast)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    row = Row(s)
    t0 = time.perf_counter()
    one_step()
    _sync(device)
    row.first_step_s = time.perf_counter() - t0
    for _ in range(args.warmup):
        one_step()
    _sync(device)
    steps, t0 = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - t0 < args.min_time:
        for _ in range(args.min_steps):  # chunks between syncs keep the launch queue full
            one_step()
        steps += args.min_steps
        _sync(device)
    elapsed = time.perf_counter() - t0
    row.step_ms = 1000 * elapsed / steps
    row.img_s = steps * s.batch / elapsed
    row.tflops = row.img_s * flops_train / 1e12
    row.peak_fraction = row.tflops / args.peak_tflops if args.peak_tflops else None
    row.measured_peak_fraction = row.tflops / args.measured_tflops if args.measured_tflops else None
    if device.type == "cuda":
        row.peak_mem_gib = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_for(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def table(rows: list[Row]) -> str:
    head = (f"{'batch':>5} {'amp':>4} {'ch_last':>7} {'compile':>7} {'h2d':>3} {'img/s':>9} {'ms/step':>8} "
            f"{'TFLOP/s':>8} {'%peak':>6} {'%meas':>6} {'x base':>6} {'1st s':>6} {'GiB':>5}")
    lines = [head]
    for r in rows:
        s = r.setting
        cells = f"{s.batch:>5} {s.amp:>4} {str(s.channels_last):>7} {str(s.compile):>7} {'y' if s.h2d else '-':>3}"
        if r.error:
            lines.append(f"{cells} {r.error}")
            continue
        pct = f"{100 * r.peak_fraction:6.1f}" if r.peak_fraction is not None else f"{'-':>6}"
        meas = f"{100 * r.measured_peak_fraction:6.1f}" if r.measured_peak_fraction is not None else f"{'-':>6}"
        mem = f"{r.peak_mem_gib:5.1f}" if r.peak_mem_gib is not None else f"{'-':>5}"
        ratio = f"{r.vs_baseline:6.2f}" if r.vs_baseline is not None else f"{'-':>6}"
        lines.append(f"{cells} {r.img_s:9.1f} {r.step_ms:8.2f} {r.tflops:8.2f} {pct} {meas} {ratio} "
                     f"{r.first_step_s:6.1f} {mem}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_step", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--model", default="alexnet", help="model.name: alexnet, alexnet_bn, torchvision:<name>")
    p.add_argument("--batches", default="128,256,512", help="per-device batch sizes")
    p.add_argument("--main-batch", type=int, default=256, help="the batch size every switch is compared at")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile settings")
    p.add_argument("--quick", action="store_true", help="batch 2, two timed steps: a check that it runs")
    p.add_argument("--fast-only", action="store_true", help="only the fast recipe's setting, compiled and eager")
    p.add_argument("--fast-batch", type=int, default=FAST_BATCH, help="its per-device batch size")
    p.add_argument("--matmul-n", type=int, default=8192, help="size of the bf16 matmuls timed for the measured peak")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps after the first")
    p.add_argument("--min-steps", type=int, default=20, help="timed steps between clock reads")
    p.add_argument("--min-time", type=float, default=1.5, help="seconds of timed steps per setting, at least")
    p.add_argument("--budget-s", type=float, default=480, help="start no new setting after this many seconds")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak (default: by GPU name)")
    p.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false",
                   help="torch.backends.cudnn.benchmark=False (the trainer turns it on: dist.use_fixed_shape_kernels)")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.main_batch, args.warmup, args.min_steps, args.min_time = "2", 2, 1, 2, 0.0
        args.fast_batch, args.matmul_n = 2, 256
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.exit(2, "error: --device cuda but CUDA is not available here; use --device cpu --quick for a CPU check\n")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    name, peak = peak_for(device)
    args.peak_tflops = args.peak_tflops or peak
    flops_fwd, flops_train = train_flops_per_image(build_model(ModelConfig(name=args.model), 1000), args.image_size)
    args.measured_tflops = matmul_peak.measure(device, args.matmul_n, iters=20 if device.type == "cuda" else 2)

    if args.fast_only:
        settings = fast_settings(args.fast_batch, not args.no_compile)
    else:
        settings = plan([int(b) for b in args.batches.split(",")], args.main_batch, not args.no_compile, args.quick,
                        args.fast_batch)
    rows, start = [], time.perf_counter()
    for s in settings:
        if time.perf_counter() - start > args.budget_s:
            rows.append(Row(s, error=f"skipped: --budget-s {args.budget_s:.0f} spent"))
            continue
        try:
            rows.append(measure(s, args, device, flops_train))
        except torch.OutOfMemoryError:
            rows.append(Row(s, error="out of memory"))
        except Exception as e:  # noqa: BLE001 - one failing setting (a compile error, say) must not lose the table
            rows.append(Row(s, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"))
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"# {asdict(s)}: {rows[-1].img_s or rows[-1].error}", flush=True)

    base = next((r for r in rows if r.img_s and r.setting == Setting(args.main_batch, "off", False, False)), None)
    for r in rows:
        r.vs_baseline = r.img_s / base.img_s if (r.img_s and base and base.img_s) else None
    measured = [r for r in rows if r.img_s]
    best = max(measured, key=lambda r: r.img_s or 0.0) if measured else None
    print(f"device: {name}; model {args.model}: {flops_fwd / 1e9:.3f} GFLOP/image forward, {flops_train / 1e9:.3f} "
          f"per training image; bf16 peak {args.peak_tflops or '-'} TFLOP/s (datasheet), "
          f"{args.measured_tflops:.1f} measured ({args.matmul_n}^3 matmuls); cudnn.benchmark={args.cudnn_benchmark}")
    print(table(rows))
    print(json.dumps({
        "device": name, "model": args.model, "torch": torch.__version__, "image_size": args.image_size,
        "flops_per_image_forward": flops_fwd, "flops_per_image_train": flops_train,
        "peak_bf16_tflops": args.peak_tflops, "measured_bf16_tflops": args.measured_tflops,
        "cudnn_benchmark": args.cudnn_benchmark,
        "baseline": asdict(base.setting) if base else None,
        "best": {**asdict(best.setting), "img_s": best.img_s, "peak_fraction": best.peak_fraction,
                 "measured_peak_fraction": best.measured_peak_fraction} if best else None,
        "rows": [{**asdict(r.setting), **{k: v for k, v in asdict(r).items() if k != "setting"}} for r in rows],
        "wall_s": time.perf_counter() - start,
    }))


if __name__ == "__main__":
    main()
