"""The device's measured dense bf16 matmul rate: n x n x n products timed back to back (CUDA events on a
GPU), the best of a few rounds, in TFLOP/s. The denominator bench.gpu_step and bench.gpu_check report
fractions of, beside the datasheet peak.

    python -m bench.matmul_peak                       # one GPU: 8192^3, about 10 s
    python -m bench.matmul_peak --device cpu --n 512  # the same code, on the CPU
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def measure(device: torch.device, n: int = 8192, iters: int = 20, rounds: int = 3) -> float:
    """TFLOP/s of bf16 (n, n) @ (n, n), 2 n^3 FLOPs each, best of `rounds` runs of `iters` products."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    out = torch.empty_like(a)
    torch.matmul(a, b, out=out)  # warm up: the library picks its kernel
    best = 0.0
    for _ in range(rounds):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                torch.matmul(a, b, out=out)
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                torch.matmul(a, b, out=out)
            seconds = time.perf_counter() - t0
        best = max(best, 2 * n**3 * iters / seconds / 1e12)
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.matmul_peak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    print(json.dumps({"device": str(device), "n": args.n, "bf16_matmul_tflops": measure(device, args.n, args.iters)}))


if __name__ == "__main__":
    main()
