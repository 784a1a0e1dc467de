"""The on-paper model of docs/scaling.md: AlexNet's step time and throughput against node count and
network bandwidth. Nothing is timed; FLOPs and gradient bytes are counted from the model itself.

    python -m bench.scaling_model [--tflops 50] [--gpus-per-node 8] [--nvlink-gbs 300]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from trainer.model import AlexNet

FC_LAYERS = ("14", "17", "20")  # the Linear layers of the seed AlexNet's nn.Sequential


@dataclass(frozen=True)
class Costs:
    fwd_flops: float  # per image
    bwd_flops: float  # per image
    bwd_fc_flops: float  # the FC layers' backward, which runs first: their gradients are ready early
    grad_bytes: float  # fp32 gradients
    fc_bytes_fraction: float


def count() -> Costs:
    model, x = AlexNet(1000), torch.randn(1, 3, 224, 224)
    with FlopCounterMode(display=False) as fwd:
        y = model(x)
    with FlopCounterMode(display=False) as bwd:
        y.sum().backward()
    # A Linear layer's backward is two GEMMs of its forward's size (input and weight gradients).
    per_layer = fwd.get_flop_counts()
    bwd_fc = 2 * sum(sum(per_layer[f"AlexNet.{i}"].values()) for i in FC_LAYERS)
    params = dict(model.named_parameters())
    fc = sum(p.numel() for n, p in params.items() if n.split(".")[0] in FC_LAYERS)
    total = sum(p.numel() for p in params.values())
    return Costs(fwd.get_total_flops(), bwd.get_total_flops(), bwd_fc, 4.0 * total, fc / total)


def step_time(c: Costs, *, nodes: int, gpus: int, batch: int, flops: float, node_gbs: float,
              nvlink_gbs: float, bytes_per_grad: int, overlap: bool) -> tuple[float, float]:
    """(step seconds, compute-only seconds) for one GPU's `batch` images."""
    t_fwd, t_bwd, t_bwd_fc = (f * batch / flops for f in (c.fwd_flops, c.bwd_flops, c.bwd_fc_flops))
    size = c.grad_bytes * bytes_per_grad / 4

    def comm(nbytes: float) -> float:  # ring all-reduce: within the node over NVLink, then across nodes
        t = 2 * (gpus - 1) / gpus * nbytes / (nvlink_gbs * 1e9)
        return t + (2 * (nodes - 1) / nodes * nbytes / (node_gbs * 1e9) if nodes > 1 else 0.0)

    compute = t_fwd + t_bwd
    if not overlap:
        return compute + comm(size), compute
    # FC gradients (most of the bytes) are ready after the FC backward and travel while the convolutions'
    # backward runs; the conv gradients' last bucket can only start when backward has finished.
    conv = size * (1 - c.fc_bytes_fraction)
    return t_fwd + max(t_bwd + comm(conv), t_bwd_fc + comm(size)), compute


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tflops", type=float, default=50, help="achieved TFLOP/s per GPU (bf16 autocast)")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--nvlink-gbs", type=float, default=300, help="all-reduce bus bandwidth inside a node, GB/s")
    a = p.parse_args()
    c = count()
    print(f"AlexNet (seed): {c.grad_bytes / 4 / 1e6:.1f}M parameters = {c.grad_bytes / 1e6:.1f} MB fp32 gradients, "
          f"{c.fc_bytes_fraction:.1%} in the FC layers")
    print(f"per image: forward {c.fwd_flops / 1e9:.2f} GFLOP, backward {c.bwd_flops / 1e9:.2f} GFLOP "
          f"(FC part {c.bwd_fc_flops / c.bwd_flops:.1%})")
    links = {"25 Gb/s": 25 / 8, "100 Gb/s": 100 / 8, "400 Gb/s": 400 / 8, "8x400 Gb/s": 3200 / 8}
    g = a.gpus_per_node
    for title, batch_of in (("strong scaling: the recipe's global batch 256", lambda n: 256 // (n * g)),
                            ("weak scaling: 128 images per GPU", lambda n: 128)):
        print(f"\n{title}; {a.tflops:g} TFLOP/s per GPU, {g} GPUs per node; "
              "images/s (scaling efficiency) for fp32 | bf16 gradients, with overlap")
        print(f"{'nodes':>5} {'batch/GPU':>9} " + " ".join(f"{name:>23}" for name in links))
        for nodes in (1, 2, 4, 8, 16):
            batch = batch_of(nodes)
            if batch < 1:
                continue
            cells = []
            for gbs in links.values():
                pair = []
                for bytes_per_grad in (4, 2):
                    t, compute = step_time(c, nodes=nodes, gpus=g, batch=batch, flops=a.tflops * 1e12,
                                           node_gbs=gbs, nvlink_gbs=a.nvlink_gbs,
                                           bytes_per_grad=bytes_per_grad, overlap=True)
                    pair.append(f"{nodes * g * batch / t / 1e3:4.0f}k {compute / t:4.0%}")
                cells.append(" | ".join(pair))
            print(f"{nodes:>5} {batch:>9} " + " ".join(f"{cell:>23}" for cell in cells))


if __name__ == "__main__":
    main()
