"""Everything distributed, in one place: the only module that imports torch.distributed.

`setup` reads torchrun's environment (a world of 1 without it), picks nccl on CUDA and gloo on the
CPU, and returns a frozen DistInfo that other modules receive as a value.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str, timeout_minutes: float) -> DistInfo:
    """Join the process group that torchrun describes in the environment, or run alone."""
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but CUDA is not available here; use device=auto or device=cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1:
        torch_dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=dev if use_cuda else None,
        )
    return DistInfo(rank, local_rank, world_size, dev)


def wrap(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP when there is more than one process; the model itself otherwise."""
    if info.world_size == 1:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks in place (a sync point); returns it for chaining."""
    if info.world_size > 1:
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when it is true on at least one (e.g. "a signal asked us to stop")."""
    if info.world_size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return bool(t.item())


def gather_ints(value: int, info: DistInfo) -> list[int]:
    """Every rank's `value`, in rank order, on every rank."""
    if info.world_size == 1:
        return [value]
    out = [torch.zeros(1, dtype=torch.int64, device=info.device) for _ in range(info.world_size)]
    torch_dist.all_gather(out, torch.tensor([value], device=info.device))
    return [int(t.item()) for t in out]


def broadcast_object(obj: object, info: DistInfo) -> object:
    """The main rank's value of `obj` on every rank."""
    if info.world_size == 1:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        torch_dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.world_size > 1 and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
