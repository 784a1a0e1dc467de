"""One training step, the evaluation pass and the autocast they run under: no I/O, no rank checks, no logging.

Both return tensors on the device and leave it to the caller when to synchronise (`.item()` is a
sync point, so the loop only does it when it logs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
IGNORE = -100  # the label of a sample that could not be decoded: the loss's ignore_index, left out of every count


def autocast_for(device: torch.device, amp: str) -> Callable[[], AbstractContextManager]:
    """A factory of autocast contexts for `amp` ("off" | "bf16" | "fp16") on `device`."""
    dtype = AMP_DTYPES.get(amp)
    return (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext


def accuracy_counts(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """How many rows have the target among their top-k logits, for each k (a float tensor)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top == targets.unsqueeze(1)
    return torch.stack([hits[:, :k].any(dim=1).sum() for k in ks]).float()


def train_step(
    model: nn.Module,
    micro_batches: Sequence[tuple[torch.Tensor, Any]],
    seeds: Sequence[int],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    criterion: Callable[[torch.Tensor, Any], torch.Tensor],
    autocast: Callable[[], AbstractContextManager],
    grad_clip: float = 0.0,
) -> torch.Tensor:
    """One optimizer step over `micro_batches` (inputs, loss targets): forward and backward of each, the
    gradients accumulating, then one update; returns the mean loss. torch is seeded with `seeds[j]` before
    micro-batch j (its dropout masks). DDP all-reduces the gradients in the last backward only (no_sync on
    the others), so accumulating k micro-batches costs one all-reduce, as one batch does."""
    optimizer.zero_grad(set_to_none=True)
    n = len(micro_batches)
    losses = []
    for j, ((images, targets), seed) in enumerate(zip(micro_batches, seeds)):
        torch.manual_seed(seed)
        last = j == n - 1
        with nullcontext() if last else getattr(model, "no_sync", nullcontext)():
            with autocast():
                loss = criterion(model(images), targets)
            scaler.scale(loss / n if n > 1 else loss).backward()
        losses.append(loss.detach())
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)  # skips the update when fp16 gradients overflowed
    scaler.update()
    return losses[0] if n == 1 else torch.stack(losses).mean()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    prepare: Callable[[torch.Tensor], torch.Tensor],
    autocast: Callable[[], AbstractContextManager],
    pad_to: int = 0,
    per_class: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sums over this rank's share of the data: [loss_sum, top1_hits, top5_hits, count]; with `per_class`, a
    (2, classes) tensor, also each class's samples and top-1 hits, added into it.

    A batch smaller than `pad_to` (the last of each loader worker) is padded to it with IGNORE rows,
    which no sum counts: every batch has one shape, so neither cuDNN's autotuner nor a compiled model
    sees a new one."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    totals = torch.zeros(4, device=device)
    for images, targets in batches:
        images, targets = _pad(prepare(images), targets.to(device, non_blocking=True), pad_to)
        with autocast():
            logits = model(images)
        loss_sum = nn.functional.cross_entropy(logits.float(), targets, reduction="sum", ignore_index=IGNORE)
        counted = (targets != IGNORE).sum().float().view(1)
        totals += torch.cat([loss_sum.view(1), accuracy_counts(logits, targets), counted])
        if per_class is not None:
            valid = targets != IGNORE
            hits = logits[valid].argmax(1) == targets[valid]
            per_class[0] += torch.bincount(targets[valid], minlength=per_class.shape[1])
            per_class[1] += torch.bincount(targets[valid][hits], minlength=per_class.shape[1])
    model.train(was_training)
    return totals


def _pad(images: torch.Tensor, targets: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`images` and `targets` with zero images labelled IGNORE appended up to `n` rows, in the same memory format."""
    have = images.shape[0]
    if have >= n:
        return images, targets
    fmt = torch.channels_last if images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last) \
        and not images.is_contiguous() else torch.contiguous_format
    padded = torch.empty((n, *images.shape[1:]), dtype=images.dtype, device=images.device, memory_format=fmt)
    padded[have:] = 0
    padded[:have] = images
    return padded, torch.cat([targets, targets.new_full((n - have,), IGNORE)])
