"""Everything distributed, in one place: the only module that imports torch.distributed.

`setup` reads torchrun's environment (a world of 1 without it), picks nccl on CUDA and gloo on the
CPU, and returns a frozen DistInfo that other modules receive as a value. Collectives give up after
run.timeout_minutes; small agreements between ranks (`agree_max`) travel on CPU tensors over gloo.
"""

from __future__ import annotations

import datetime
import gc
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import TypeVar, cast

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from trainer.config import DDPConfig
from trainer.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

_cpu_group: torch_dist.ProcessGroup | None = None  # the process group for `agree_max`; None: the default one


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def use_fixed_shape_kernels() -> None:
    """cuDNN autotuning: each convolution shape is timed once, then its fastest algorithm is reused. Every
    shape here is fixed (training batches are full; evaluation pads its last batch, step.evaluate), so
    nothing retunes after the first steps. Set for every CUDA process in setup()."""
    torch.backends.cudnn.benchmark = True


def setup(device: str, timeout_minutes: float) -> DistInfo:
    """Join the process group that torchrun describes in the environment, or run alone."""
    global _cpu_group
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but CUDA is not available here; use device=auto or device=cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
        use_fixed_shape_kernels()
    else:
        dev = torch.device("cpu")
    if world_size > 1:
        if rank == 0:
            _warn_about_shared_store()
        timeout = datetime.timedelta(minutes=timeout_minutes)  # gloo raises after it; nccl's watchdog aborts
        torch_dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=timeout, device_id=dev if use_cuda else None,
        )
        # Small per-step agreements travel on CPU tensors: on CUDA a gloo group beside nccl, so that
        # they never wait for (or sync with) the GPU queue. On the CPU the default group is gloo already.
        _cpu_group = cast(torch_dist.ProcessGroup, torch_dist.new_group(backend="gloo", timeout=timeout)) \
            if use_cuda else None
    return DistInfo(rank, local_rank, world_size, dev)


def _warn_about_shared_store() -> None:
    # torchrun shares its rendezvous TCPStore with the trainers by default, and a restarted group
    # reads the previous attempt's gloo/nccl addresses from it: init fails with "Connection refused"
    # (pytorch/pytorch#135712). Per-attempt key prefixes are no fix: attempt counts differ between nodes.
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if shared and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", 0)):
        log.warning("torchrun --max-restarts is set but TORCH_DISABLE_SHARE_RDZV_TCP_STORE is not 1: a "
                    "restarted group would fail to connect (pytorch/pytorch#135712). Export "
                    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 where torchrun starts (docs/fault_tolerance.md).")


def wrap(model: nn.Module, info: DistInfo, cfg: DDPConfig = DDPConfig()) -> nn.Module:
    """DDP when there is more than one process (bucket size and compression from `cfg`); the model otherwise."""
    if info.world_size == 1:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    ddp = DistributedDataParallel(model, device_ids=ids, bucket_cap_mb=cfg.bucket_cap_mb)
    if cfg.grad_compression == "bf16":
        # Each bucket is cast to bf16, all-reduced, and cast back: half the bytes on the wire, and the
        # averaged gradient keeps bf16's 8 mantissa bits. Works on nccl (>= 2.10) and gloo alike.
        ddp.register_comm_hook(state=None, hook=default_hooks.bf16_compress_hook)
    return ddp


def weights_digest(model: nn.Module) -> int:
    """A 48-bit hash of the parameters' bytes (exact in a float64 metric); buffers are left out.

    Buffers such as batch-norm running statistics legitimately differ between ranks (each updates them
    from its own batches after DDP broadcasts rank 0's at the start of forward). Copies every parameter
    to the host and hashes it on one core: about 0.5 s for AlexNet's 203 MB, so once per epoch, not per step.
    """
    h = hashlib.blake2b(digest_size=6)
    for p in model.parameters():
        h.update(p.detach().reshape(-1).cpu().view(torch.uint8).numpy().data)
    return int.from_bytes(h.digest(), "big")


def check_weights_agree(model: nn.Module, info: DistInfo) -> int:
    """Every rank's weights_digest must match rank 0's (a sync point); returns the common digest.

    DDP keeps replicas equal only as long as every rank applies identical updates; a rank that skipped
    a step, loaded another checkpoint or hit nondeterministic hardware would otherwise train on silently.
    """
    digests = gather_ints(weights_digest(model), info)
    if len(set(digests)) > 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise RuntimeError(f"model weights differ between ranks: ranks {differ} do not match rank 0 "
                           f"(digests by rank: {[f'{d:012x}' for d in digests]})")
    return digests[0]


def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (e.g. batch-norm running statistics) on every rank, before validation: each rank
    evaluates the weights the checkpoint holds (rank 0's), not its own statistics. timm's distribute_bn."""
    if info.world_size > 1:
        for b in model.buffers():
            torch_dist.broadcast(b, src=0)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks in place (a sync point); returns it for chaining."""
    if info.world_size > 1:
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
    return t


def agree_max(values: list[int], info: DistInfo) -> list[int]:
    """Each value's maximum over ranks, on every rank; over gloo on the CPU, so no GPU sync (a CPU one)."""
    if info.world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.int64)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX, group=_cpu_group)
    return t.tolist()


def peer_failure(error: BaseException) -> str | None:
    """What a failed collective says about the other ranks, or None when `error` is something else."""
    text = str(error).lower()
    if not isinstance(error, RuntimeError):  # torch.distributed.DistError is one too
        return None
    if "timed out" in text or "timeout" in text:
        return "timed out waiting for another rank (run.timeout_minutes)"
    if any(s in text for s in ("connection closed by peer", "connection reset by peer", "broken pipe")):
        return "lost another rank, which closed its connection (it exited or was killed)"
    return None


def same_count(count: int, what: str, info: DistInfo) -> int:
    """`count`, checked equal on every rank (a sync point); a RuntimeError naming each rank's otherwise.
    Ranks that took different numbers of batches would deadlock DDP or silently diverge."""
    counts = gather_ints(count, info)
    if len(set(counts)) > 1:
        raise RuntimeError(f"ranks took different numbers of {what}: {counts}")
    return counts[0]


def gather_ints(value: int, info: DistInfo) -> list[int]:
    """Every rank's `value`, in rank order, on every rank."""
    if info.world_size == 1:
        return [value]
    out = [torch.zeros(1, dtype=torch.int64, device=info.device) for _ in range(info.world_size)]
    torch_dist.all_gather(out, torch.tensor([value], device=info.device))
    return [int(t.item()) for t in out]


def broadcast_object(obj: T, info: DistInfo) -> T:
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
        # DDP's reducer sits in reference cycles that hold the group; collected only at interpreter
        # shutdown, gloo's threads could then abort the process (seen once: SIGABRT after exit 3).
        gc.collect()
        torch_dist.destroy_process_group()
