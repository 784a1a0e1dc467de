"""A started run: what it holds (`Run`) and how it is built (`start`), fresh or resumed.

`start` does, in order, everything before the first step: the checks that need the world size and the
device, the run.dir lock, the dataset manifest, the state (resumed from the newest valid checkpoint
when there is one), the logger, the model as trained (compiled, DDP-wrapped), the checkpointer, the
step guard and the training batches. trainer/loop.py runs what it returns.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer import dist, optim, step
from trainer.config import Config, ConfigError, dump, to_dict
from trainer.data import manifest as dataset
from trainer.data.jpeg import REGION_DECODE
from trainer.data.loader import TrainBatches, check_decode
from trainer.data.transforms import Normalize
from trainer.ema import ModelEma
from trainer.mixing import Mixer, Plain, build_mixing
from trainer.model import build_model, check_input_size, maybe_compile, to_memory_format, use_compile_cache
from trainer.monitoring import loggers, run_info
from trainer.monitoring.meters import StepMeter, TimeAccount
from trainer.monitoring.profiler import NullProfiler, WindowProfiler, build_profiler
from trainer.resilience import checkpoint, dirlock
from trainer.resilience.async_checkpoint import AsyncCheckpointer
from trainer.resilience.checkpointer import Checkpointer, NullWriter
from trainer.resilience.guard import StepGuard, StopFlag
from trainer.resilience.state import Position, TrainState, data_plan

log = logging.getLogger(__name__)

# Test hook: seconds each training step sleeps, so that a test whose model trains in milliseconds can
# still signal or kill a run at a chosen step.
STEP_DELAY_ENV = "TRAINER_TEST_STEP_DELAY"


@dataclass
class Run:
    """What a started run holds; built once by `_start`, read by the loop's steps and epoch ends."""

    cfg: Config
    info: dist.DistInfo
    ts: TrainState  # model, optimizer, scaler and the position: what a checkpoint holds
    manifest: dataset.Manifest
    steps_per_epoch: int
    local_batch: int
    num_classes: int
    account: TimeAccount
    guard: StepGuard
    checkpointer: Checkpointer
    batches: TrainBatches
    logger: loggers.Logger
    lock: dirlock.DirLock
    train_model: torch.nn.Module  # the model as trained: compiled and DDP-wrapped as configured
    normalize: Normalize
    autocast: Callable[[], AbstractContextManager]
    mixing: Mixer | Plain  # what the loss sees of a micro-batch (mix.*), and the loss
    meter: StepMeter
    profiler: NullProfiler | WindowProfiler  # run.profile_steps
    start_step: int
    pace: float  # the test hook's seconds per step (STEP_DELAY_ENV)

    @property
    def pos(self) -> Position:
        return self.ts.pos

    def finished(self) -> bool:
        return self.pos.epoch >= self.cfg.train.epochs or 0 < self.cfg.train.max_steps <= self.pos.step

    def lr_at(self, step: int) -> float:
        """The schedule's lr at optimizer step `step`, from optim.lr scaled to the batch (optim.lr_base_batch)."""
        cfg = self.cfg
        return optim.lr_at(step, self.steps_per_epoch, self.steps_per_epoch * cfg.train.epochs,
                           optim.scaled_lr(cfg.optim, cfg.train.batch_size), cfg.schedule)

    def epoch_done(self) -> bool:
        return self.pos.step_in_epoch >= self.steps_per_epoch or self.finished()

    def close(self) -> None:
        """On every way out: an error still waits for the save in flight."""
        self.profiler.close()
        self.checkpointer.close()
        self.logger.close()
        self.lock.release()


def start(cfg: Config, info: dist.DistInfo, account: TimeAccount, stop: StopFlag) -> Run:
    """Everything a run needs, in order: checks, the run.dir lock, the dataset, the state (fresh or
    resumed), the logger, the model as trained, the checkpointer, the guard and the training batches."""
    _check_for_this_run(cfg, info)
    run_dir = Path(cfg.run.dir)
    # One writer per run.dir; the lock goes with the process, so a killed run never leaves it behind.
    lock = dirlock.acquire(run_dir, "run.dir") if info.is_main else dirlock.DirLock(None)
    manifest = dataset.load_manifest(cfg.data.root)
    steps_per_epoch = dataset.steps_per_epoch(manifest.train, cfg.train.batch_size)
    total_steps = steps_per_epoch * cfg.train.epochs
    num_classes = cfg.model.num_classes or len(manifest.class_names)
    ts = _state(cfg, info, num_classes, manifest.train.num_samples, steps_per_epoch, run_dir / "checkpoints")
    if info.is_main:
        (run_dir / "config.yaml").write_text(dump(cfg))
        ts.run_id = run_info.resolve_run_id(run_dir, ts.run_id)  # also kept in run_dir: a restart continues it
    logger = loggers.build_logger(
        info.is_main, cfg.wandb, run_dir, ts.run_id, ts.config, start_step=ts.pos.step,
        end_step=min(total_steps, cfg.train.max_steps or total_steps), class_names=manifest.class_names,
        facts={"region_decode": REGION_DECODE},  # False: the C decoder was not built, whole images are decoded
    )
    if cfg.model.compile:
        use_compile_cache(run_dir / "compile_cache")  # a restart, here or on another node, reuses it
    train_model = dist.wrap(maybe_compile(ts.model, cfg.model.compile), info, cfg.ddp)

    def saved(path: Path, at: int, best: bool) -> None:  # once durable, on the loop's thread
        log.info("saved checkpoint %s%s", path, " (best so far)" if best else "")
        logger.log_checkpoint(path, at, best=best)  # a W&B artifact if wandb.log_checkpoints

    writer = AsyncCheckpointer(run_dir / "checkpoints", cfg.checkpoint.keep_last, cfg.checkpoint.keep_best, saved,
                               background=cfg.checkpoint.async_save) if info.is_main else NullWriter()
    checkpointer = Checkpointer(cfg.checkpoint, writer, functools.partial(account.measure, "checkpoint"))
    local_batch = cfg.train.batch_size // info.world_size
    batches = TrainBatches(manifest.train, cfg.data, info.device, end_epoch=cfg.train.epochs,
                           wait_timer=functools.partial(account.measure, "data_wait"),
                           channels_last=cfg.model.channels_last, seed=cfg.seed, accum_steps=cfg.train.accum_steps,
                           steps=steps_per_epoch, local_batch=local_batch, rank=info.rank,
                           world_size=info.world_size, num_classes=num_classes)
    return Run(
        cfg, info, ts, manifest, steps_per_epoch, local_batch, num_classes, account,
        guard=StepGuard(info, stop, checkpointer), checkpointer=checkpointer, batches=batches, logger=logger,
        lock=lock, train_model=train_model, normalize=Normalize(info.device, cfg.model.channels_last),
        autocast=step.autocast_for(info.device, cfg.amp),
        mixing=build_mixing(cfg.mix, num_classes, cfg.train.label_smoothing, cfg.seed),
        meter=StepMeter(info.device, cfg.train.batch_size, account),
        profiler=build_profiler(cfg.run.profile_steps, run_dir, info.rank, logger.log_trace), start_step=ts.pos.step,
        pace=float(os.environ.get(STEP_DELAY_ENV, 0)),
    )


def _state(cfg: Config, info: dist.DistInfo, num_classes: int, train_samples: int, steps_per_epoch: int,
           ckpt_dir: Path) -> TrainState:
    """The model, optimizer and scaler, fresh or resumed from the checkpoint the main rank picks (every rank
    resumes from the same file)."""
    check_input_size(cfg.model, num_classes, cfg.data.image_size)  # e.g. AlexNet at 32 px: an error now
    check_input_size(cfg.model, num_classes, cfg.data.eval_size, "data.eval_image_size")
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = to_memory_format(build_model(cfg.model, num_classes).to(info.device), cfg.model.channels_last)
    ts = TrainState(model, optim.build_optimizer(cfg.optim, model),
                    torch.amp.GradScaler(info.device.type, enabled=cfg.amp == "fp16"), config=to_dict(cfg),
                    plan=data_plan(seed=cfg.seed, world_size=info.world_size, workers=cfg.data.workers,
                                   batch_size=cfg.train.batch_size, shuffle_buffer=cfg.data.shuffle_buffer,
                                   train_samples=train_samples, steps_per_epoch=steps_per_epoch,
                                   accum_steps=cfg.train.accum_steps),
                    ema=ModelEma(model, cfg.train.ema_decay, cfg.train.ema_warmup) if cfg.train.ema_decay else None)
    found = checkpoint.load_latest(ckpt_dir) if (cfg.checkpoint.resume and info.is_main) else None
    chosen = dist.broadcast_object(str(found[0]) if found else None, info)
    if chosen:
        ts.restore(found[1] if found else checkpoint.load(Path(chosen)), chosen)
    return ts


def _check_for_this_run(cfg: Config, info: dist.DistInfo) -> None:
    """What the config alone cannot check: it depends on the world size and the device."""
    if cfg.train.batch_size % info.world_size:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} does not split evenly over {info.world_size} ranks")
    if (cfg.train.batch_size // info.world_size) % cfg.train.accum_steps:
        raise ConfigError(f"train.accum_steps={cfg.train.accum_steps} does not split the batch of each of the "
                          f"{info.world_size} ranks ({cfg.train.batch_size // info.world_size}) into equal "
                          "micro-batches: choose train.batch_size = ranks x accum_steps x micro-batch")
    if cfg.amp == "fp16" and info.device.type != "cuda":
        raise ConfigError("amp=fp16 needs CUDA; use amp=bf16 or amp=off on the CPU")
    check_decode(cfg.data, info.device)  # data.decode=gpu without CUDA stops here, before any work
