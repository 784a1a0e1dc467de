"""The nvJPEG decode race (pytorch/vision#9606), reproduced and counted: each iteration queues a long
matmul on the training stream, then writes into a buffer behind it and frees the buffer, then decodes a
batch. The old path (torchvision's decode_jpeg on the training thread's stream) may be handed the freed
buffer while the queued writes are still to come, and they land on the decoded pixels. The new path
(trainer/data/gpu_prefetch.py: the loader's own stream, a background thread) never shares that memory.
An iteration is corrupted when its images differ from a clean decode of the same bytes. CUDA only.

    python -m bench.decode_race --path old --iters 200
    python -m bench.decode_race --path new --iters 200
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np
import simplejpeg
import torch

from trainer.data import gpu_decode
from trainer.data.gpu_prefetch import CudaStreams, Prefetcher


def _jpegs(n: int, size: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        img = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        out.append(torch.frombuffer(bytearray(simplejpeg.encode_jpeg(img, quality=90)), dtype=torch.uint8))
    return out


def _queue_hazard(device: torch.device, nbytes: int, mats: tuple[torch.Tensor, torch.Tensor]) -> None:
    """On the current stream: a long matmul, then writes into a buffer of `nbytes`, then free the buffer (the
    allocator may hand it out again at once: safe for this stream's later kernels, not for another's)."""
    torch.matmul(*mats)
    victim = torch.empty(nbytes, dtype=torch.uint8, device=device)
    for _ in range(4):
        victim.fill_(7)
    del victim


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.decode_race", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", choices=("old", "new"), required=True)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=1024, help="image side in pixels")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.exit(2, "error: the decode race needs a CUDA device\n")
    device = torch.device("cuda")
    blobs = _jpegs(args.batch, args.size)
    old = gpu_decode.torchvision_decode
    new = gpu_decode.default_decode()
    decode = old if args.path == "old" else new
    clean = [t.cpu() for t in decode(blobs, device)]  # each decoder's own clean output: they may differ by a level
    torch.cuda.synchronize()
    mats = tuple(torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    nbytes = 3 * args.size * args.size
    corrupted, t0 = 0, time.perf_counter()
    if args.path == "old":
        for _ in range(args.iters):
            _queue_hazard(device, nbytes, mats)  # type: ignore[arg-type]
            images: Sequence[torch.Tensor] = old(blobs, device)
            torch.cuda.synchronize()
            corrupted += any(not torch.equal(a.cpu(), b) for a, b in zip(images, clean))
    else:
        batches: Prefetcher[int, tuple] = Prefetcher(range(args.iters), lambda _: tuple(new(blobs, device)),
                                                     CudaStreams(device))
        it = iter(batches)
        for _ in range(args.iters):
            _queue_hazard(device, nbytes, mats)  # type: ignore[arg-type]
            images = next(it)
            torch.cuda.synchronize()
            corrupted += any(not torch.equal(a.cpu(), b) for a, b in zip(images, clean))
    print(json.dumps({"path": args.path, "decoder": "torchvision" if args.path == "old" else new.__name__,
                      "iters": args.iters, "corrupted_iters": corrupted, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
