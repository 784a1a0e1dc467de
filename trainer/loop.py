"""The order of operations of a training run. No other module knows it.

    join the process group (a world of 1 without torchrun); read the dataset manifest
    build model -> optimizer -> grad scaler; resume them from the newest valid checkpoint in run.dir
    for each epoch, from the resumed position:
        for each step:  lr = schedule(step); seed = f(seed, rank, step); train_step
            every train.log_every steps: reduce loss over ranks, log; agree whether to stop (signal)
            every checkpoint.every_steps steps: save
        validate (every sample once across ranks); log; save
    on SIGTERM/SIGUSR1: all ranks agree at a log step, save, exit with EXIT_PREEMPTED
"""

from __future__ import annotations

import logging
import secrets
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer import checkpoint, data, dist, metrics, optim, step
from trainer.config import Config, ConfigError, dump, to_dict
from trainer.model import build_model, to_memory_format
from trainer.seeding import derive_seed
from trainer.transforms import Normalize

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again", which is what a requeued job does


@dataclass
class Position:
    """Where the run is: optimizer steps taken, and the next batch of which epoch."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0


class StopFlag:
    """Set by SIGTERM/SIGUSR1 (preemption); acted on at the next step where all ranks agree."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


def run(cfg: Config) -> int:
    info = dist.setup(cfg.device, cfg.run.timeout_minutes)
    try:
        return _train(cfg, info)
    finally:
        dist.teardown(info)


def _train(cfg: Config, info: dist.DistInfo) -> int:
    stop = StopFlag()
    if cfg.train.batch_size % info.world_size:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} does not split evenly over {info.world_size} ranks")
    if cfg.amp == "fp16" and info.device.type != "cuda":
        raise ConfigError("amp=fp16 needs CUDA; use amp=bf16 or amp=off on the CPU")
    manifest = data.load_manifest(cfg.data.root)
    local_batch = cfg.train.batch_size // info.world_size
    steps_per_epoch = data.steps_per_epoch(manifest.train, cfg.train.batch_size)
    total_steps = steps_per_epoch * cfg.train.epochs
    run_dir, ckpt_dir = Path(cfg.run.dir), Path(cfg.run.dir) / "checkpoints"

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(cfg.model, cfg.model.num_classes or len(manifest.class_names))
    model = to_memory_format(model.to(info.device), cfg.model.channels_last)
    optimizer = optim.build_optimizer(cfg.optim, model)
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.amp == "fp16")
    pos, run_id = Position(), secrets.token_hex(4)

    # The main rank picks the checkpoint so that every rank resumes from the same file.
    found = checkpoint.load_latest(ckpt_dir) if (cfg.checkpoint.resume and info.is_main) else None
    chosen = dist.broadcast_object(str(found[0]) if found else None, info)
    if chosen:
        state = found[1] if found else checkpoint.load(Path(chosen))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        pos = _resume_position(state, steps_per_epoch, info, cfg)
        run_id = state.get("wandb_run_id") or run_id
        log.info("resumed from %s at step %d (epoch %d, batch %d)", chosen, pos.step, pos.epoch, pos.step_in_epoch)

    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump(cfg))
    logger = metrics.build_logger(info.is_main, cfg.wandb, run_dir, run_id, to_dict(cfg))

    train_model = dist.wrap(torch.compile(model) if cfg.model.compile else model, info)
    normalize = Normalize(info.device, cfg.model.channels_last)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    autocast = (lambda: torch.autocast(info.device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)

    def save() -> None:
        if info.is_main:
            state = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "step": pos.step, "epoch": pos.epoch, "step_in_epoch": pos.step_in_epoch,
                "data": {"world_size": info.world_size, "workers": cfg.data.workers,
                         "steps_per_epoch": steps_per_epoch},
                "config": to_dict(cfg), "wandb_run_id": run_id,
            }
            path = checkpoint.save(state, ckpt_dir, pos.step, cfg.checkpoint.keep_last)
            log.info("saved checkpoint %s", path)

    def finished() -> bool:
        return pos.epoch >= cfg.train.epochs or 0 < cfg.train.max_steps <= pos.step

    try:
        while not finished():
            loader = data.train_loader(
                manifest.train, cfg.data, info.device, seed=cfg.seed, epoch=pos.epoch,
                start_step=pos.step_in_epoch, steps=steps_per_epoch, local_batch=local_batch,
                rank=info.rank, world_size=info.world_size,
            )
            train_model.train()
            first_batch = pos.step_in_epoch
            loss_sum = torch.zeros(2, device=info.device)  # [sum of losses, steps] since the last log
            wait, tick = 0.0, time.perf_counter()
            batches = iter(loader)
            while pos.step_in_epoch < steps_per_epoch and not finished():
                t0 = time.perf_counter()
                images, targets = next(batches)
                wait += time.perf_counter() - t0

                lr = optim.lr_at(pos.step, steps_per_epoch, total_steps, cfg.optim.lr, cfg.schedule)
                optim.set_lr(optimizer, lr)
                torch.manual_seed(derive_seed(cfg.seed, "step", info.rank, pos.step))  # dropout masks
                loss = step.train_step(
                    train_model, normalize(images), targets.to(info.device, non_blocking=True),
                    optimizer, scaler, criterion, autocast, cfg.train.grad_clip,
                )
                loss_sum += torch.stack([loss.float(), loss.new_ones((), dtype=torch.float32)])
                pos.step += 1
                pos.step_in_epoch += 1

                if pos.step % cfg.train.log_every == 0:
                    dist.all_reduce_sum(loss_sum, info)  # a sync point: only on log steps
                    elapsed = time.perf_counter() - tick
                    steps = loss_sum[1].item() / info.world_size
                    logger.log({
                        "train/loss": loss_sum[0].item() / loss_sum[1].item(),
                        "train/lr": lr,
                        "train/epoch": pos.epoch + pos.step_in_epoch / steps_per_epoch,
                        "perf/images_per_s": steps * cfg.train.batch_size / elapsed,
                        "perf/step_time_s": elapsed / steps,
                        "perf/data_wait_fraction": wait / elapsed,
                    }, pos.step)
                    loss_sum.zero_()
                    wait, tick = 0.0, time.perf_counter()
                    if dist.any_rank(stop.requested, info):
                        save()
                        dist.barrier(info)  # nobody exits before the checkpoint is on disk
                        log.warning("stopped by a signal at step %d; resume with the same command", pos.step)
                        return EXIT_PREEMPTED
                if cfg.checkpoint.every_steps and pos.step % cfg.checkpoint.every_steps == 0:
                    save()
            del batches, loader  # stop this epoch's workers before validation starts its own
            taken = dist.gather_ints(pos.step_in_epoch - first_batch, info)
            if len(set(taken)) > 1:  # DDP would deadlock or silently diverge; say so instead
                raise RuntimeError(f"ranks took different numbers of batches this epoch: {taken}")
            logger.log({"train/epoch_batches": taken[0]}, pos.step)

            if pos.step_in_epoch >= steps_per_epoch:
                pos.epoch, pos.step_in_epoch = pos.epoch + 1, 0
            if manifest.val is not None:
                logger.log(_validate(train_model, manifest.val, cfg, info, normalize, autocast, local_batch),
                           pos.step)
            save()
        return 0
    finally:
        logger.close()


def _validate(model: torch.nn.Module, split: data.Split, cfg: Config, info: dist.DistInfo,
              normalize: Normalize, autocast: Any, local_batch: int) -> dict[str, float]:
    loader = data.eval_loader(split, cfg.data, info.device, local_batch=local_batch,
                              rank=info.rank, world_size=info.world_size)
    module = getattr(model, "module", model)  # no DDP collectives: ranks hold different batch counts
    totals = dist.all_reduce_sum(step.evaluate(module, loader, normalize, autocast), info)
    loss_sum, top1, top5, count = totals.tolist()
    return {"val/loss": loss_sum / count, "val/top1": top1 / count, "val/top5": top5 / count,
            "val/count": int(count)}


def _resume_position(state: dict[str, Any], steps_per_epoch: int, info: dist.DistInfo, cfg: Config) -> Position:
    pos = Position(state["step"], state["epoch"], state["step_in_epoch"])
    same_plan = state["data"] == {"world_size": info.world_size, "workers": cfg.data.workers,
                                  "steps_per_epoch": steps_per_epoch}
    if pos.step_in_epoch and not same_plan:
        log.warning(
            "the checkpoint's data plan %s differs from this run's (world_size=%d, data.workers=%d, "
            "steps_per_epoch=%d): mid-epoch position cannot be kept; continuing at the start of epoch %d",
            state["data"], info.world_size, cfg.data.workers, steps_per_epoch, pos.epoch + 1,
        )
        pos.epoch, pos.step_in_epoch = pos.epoch + 1, 0
    return pos
