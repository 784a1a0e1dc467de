"""The order of operations of a training run. No other module knows it.

    join the process group (a world of 1 without torchrun); lock run.dir; read the dataset manifest
    build model -> optimizer -> grad scaler; resume them from the newest valid checkpoint in run.dir
    start the training loader once (its workers serve every epoch); for each epoch, from the resumed position:
        for each step:  lr = schedule(step); seed = f(seed, rank, step); train_step
            all ranks agree (one small CPU collective): stop signal? non-finite loss? time to save?
            every train.log_every steps: reduce loss over ranks, log
            every checkpoint.every_steps steps or checkpoint.every_minutes: save
        ranks compare batch counts and weight hashes (ddp.check_weights)
        validate (every train.val_every_epochs, and at the end) while the checkpoint is copied to host memory;
            then save it in the background (best.pt by val/top1)
        log where the time went (goodput.py)
    on SIGTERM/SIGUSR1/Ctrl-C: all ranks agree at the next step, save, exit with EXIT_PREEMPTED
    on a non-finite loss: fp16 skips the step (GradScaler); otherwise stop without saving, EXIT_NONFINITE
    a collective waiting past run.timeout_minutes, or losing a rank: a clear error, EXIT_PEER_FAILED
    any other error: logged once on its rank with its status (lifecycle.py); the process leaves at once,
    its peers see the closed connection within seconds; nothing is saved over the last good checkpoint
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from trainer import dist, optim, step
from trainer.config import Config, ConfigError, dump, to_dict
from trainer.data import manifest as dataset
from trainer.data.loader import check_decode, count_skipped, train_loader
from trainer.data.transforms import Normalize
from trainer.errors import EXIT_NONFINITE, EXIT_PEER_FAILED, EXIT_PREEMPTED, first_line
from trainer.model import build_model, check_input_size, maybe_compile, to_memory_format, use_compile_cache
from trainer.monitoring import loggers, meters, run_info
from trainer.monitoring.meters import StepMeter, TimeAccount
from trainer.resilience import checkpoint, dirlock, lifecycle
from trainer.resilience.async_checkpoint import AsyncCheckpointer
from trainer.resilience.guard import StepGuard, Verdict, ignore_stop_signals
from trainer.resilience.state import TrainState, data_plan
from trainer.seeding import derive_seed
from trainer.validate import validate

log = logging.getLogger(__name__)

# Test hook: seconds each training step sleeps, so that a test whose model trains in milliseconds can
# still signal or kill a run at a chosen step.
STEP_DELAY_ENV = "TRAINER_TEST_STEP_DELAY"


def run(cfg: Config) -> int:
    """Train; returns the exit status (trainer/resilience/lifecycle.py). Any error is logged here, once, on its rank."""
    info = dist.setup(cfg.device, cfg.run.timeout_minutes)
    lifecycle.watch_launcher(info.rank)
    try:
        status = _train(cfg, info)
    except BaseException as e:  # noqa: BLE001 - every way out gets a status; the process leaves next
        what = dist.peer_failure(e) if info.world_size > 1 else None
        if what is None:
            return lifecycle.status_of(e, info.rank)
        if lifecycle.launcher_gone():  # the peer left because torchrun died, before this rank's watcher saw it
            return lifecycle.left_by_launcher(info.rank)
        log.error("rank %d stops: a collective %s; the failing rank's own log says why. If a step, a checkpoint "
                  "save or validation legitimately takes longer than run.timeout_minutes=%g, raise it. (%s)",
                  info.rank, what, cfg.run.timeout_minutes, first_line(e))
        return EXIT_PEER_FAILED  # no teardown: the peer is gone, and leaving closes the connections
    finally:
        ignore_stop_signals()  # the exit status is decided; keep it
    dist.teardown(info)
    return status


def _train(cfg: Config, info: dist.DistInfo) -> int:
    account = TimeAccount()  # from the process's start
    guard = StepGuard(info, cfg.checkpoint.every_minutes)  # handles SIGTERM/SIGUSR1/Ctrl-C from here on
    _check_for_this_run(cfg, info)
    run_dir, ckpt_dir = Path(cfg.run.dir), Path(cfg.run.dir) / "checkpoints"
    # One writer per run.dir; the lock goes with the process, so a killed run never leaves it behind.
    lock = dirlock.acquire(run_dir, "run.dir") if info.is_main else None
    manifest = dataset.load_manifest(cfg.data.root)
    local_batch = cfg.train.batch_size // info.world_size
    steps_per_epoch = dataset.steps_per_epoch(manifest.train, cfg.train.batch_size)
    total_steps = steps_per_epoch * cfg.train.epochs
    num_classes = cfg.model.num_classes or len(manifest.class_names)

    ts = _state(cfg, info, num_classes, manifest.train.num_samples, steps_per_epoch, ckpt_dir)
    model = ts.model
    if info.is_main:
        (run_dir / "config.yaml").write_text(dump(cfg))
        ts.run_id = run_info.resolve_run_id(run_dir, ts.run_id)  # also kept in run_dir: a restart continues it
    pos, start_step, skipped = ts.pos, ts.pos.step, 0
    logger = loggers.build_logger(
        info.is_main, cfg.wandb, run_dir, ts.run_id, ts.config, start_step=start_step,
        end_step=min(total_steps, cfg.train.max_steps or total_steps), class_names=manifest.class_names,
    )
    if cfg.model.compile:
        use_compile_cache(run_dir / "compile_cache")  # a restart, here or on another node, reuses it
    train_model = dist.wrap(maybe_compile(model, cfg.model.compile), info, cfg.ddp)
    normalize = Normalize(info.device, cfg.model.channels_last)
    autocast = step.autocast_for(info.device, cfg.amp)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=step.IGNORE, label_smoothing=cfg.train.label_smoothing)
    meter = StepMeter(info.device, cfg.train.batch_size, account)
    pace = float(os.environ.get(STEP_DELAY_ENV, 0))

    def saved(path: Path, at: int, best: bool) -> None:  # once durable, on this thread
        log.info("saved checkpoint %s%s", path, " (best so far)" if best else "")
        logger.log_checkpoint(path, at, best=best)  # a W&B artifact if wandb.log_checkpoints

    saver = AsyncCheckpointer(ckpt_dir, cfg.checkpoint.keep_last, cfg.checkpoint.keep_best, saved,
                              background=cfg.checkpoint.async_save) if info.is_main else None

    def save(val: dict[str, float] | None = None) -> None:
        guard.saved()
        improved = ts.record_val(val)
        if saver:
            with account.measure("checkpoint"):  # the blocking part: a copy into host memory
                saver.save(ts.to_checkpoint(val), pos.step, improved)

    def finished() -> bool:
        return pos.epoch >= cfg.train.epochs or 0 < cfg.train.max_steps <= pos.step

    batches = None
    try:
        while not finished():
            if batches is None:  # once per run with data.persistent_workers, else once per epoch
                batches = iter(train_loader(
                    manifest.train, cfg.data, info.device, seed=cfg.seed, epoch=pos.epoch,
                    start_step=pos.step_in_epoch, steps=steps_per_epoch, local_batch=local_batch,
                    rank=info.rank, world_size=info.world_size, num_classes=num_classes,
                    end_epoch=cfg.train.epochs if cfg.data.persistent_workers else None,
                ))
            train_model.train()
            first_batch = pos.step_in_epoch
            meter.restart()
            while pos.step_in_epoch < steps_per_epoch and not finished():
                with account.measure("data_wait"):
                    images, targets = next(batches)
                skipped = count_skipped(targets, skipped, cfg.data.max_bad_samples)
                if pos.step == start_step:  # once per start: what the augmentation feeds the model
                    logger.log_samples(images, targets, pos.step)
                    account.start_training()
                every = cfg.checkpoint.every_steps
                with account.measure("compile" if pos.step == start_step and cfg.model.compile else "step"):
                    lr = optim.lr_at(pos.step, steps_per_epoch, total_steps, cfg.optim.lr, cfg.schedule)
                    optim.set_lr(ts.optimizer, lr)
                    torch.manual_seed(derive_seed(cfg.seed, "step", info.rank, pos.step))  # dropout masks
                    loss = step.train_step(train_model, normalize(images), targets.to(info.device, non_blocking=True),
                                           ts.optimizer, ts.scaler, criterion, autocast, cfg.train.grad_clip)
                    meter.add(loss)
                    if pace:
                        time.sleep(pace)
                    pos.advance()
                    epoch_done = pos.step_in_epoch >= steps_per_epoch or finished()  # the epoch's end saves
                    verdict = guard.check(loss, will_save=epoch_done or checkpoint.due(  # a sync point (CPU)
                        pos.step, every_steps=every, epoch_done=epoch_done))
                if verdict.nonfinite and _nonfinite_stops(verdict, ts.scaler, cfg, info.rank, pos.step, ckpt_dir):
                    return EXIT_NONFINITE
                if pos.step % cfg.train.log_every == 0:
                    loss_mean, perf = meter.report(info)  # a sync point: only on log steps
                    logger.log({"train/loss": loss_mean, "train/lr": lr,
                                "train/epoch": pos.epoch + pos.step_in_epoch / steps_per_epoch,
                                **perf, **meters.gpu_memory(info.device)}, pos.step)
                if checkpoint.due(pos.step, every_steps=every, epoch_done=epoch_done, clock_due=verdict.save_due,
                                  stop=verdict.stop):
                    save()
                if verdict.stop:
                    return _stop(logger, saver, account, info, pos.step)
            account.epoch_ended()
            if not cfg.data.persistent_workers:
                batches = None  # this epoch's workers stop before validation starts its own
            logger.log({"train/epoch_batches": dist.same_count(pos.step_in_epoch - first_batch, "batches this "
                                                                "epoch", info)}, pos.step)
            if cfg.ddp.check_weights and info.world_size > 1:  # replicas that drifted apart stop here
                logger.log({"ddp/weights_digest": dist.check_weights_agree(model, info)}, pos.step)

            if pos.step_in_epoch >= steps_per_epoch:
                pos.next_epoch()
            if saver:  # the epoch's checkpoint is copied while validation runs (it only reads the weights)
                with account.measure("checkpoint"):  # blocks only if the previous write is still going
                    saver.stage(ts.to_checkpoint(), pos.step)
            val = None
            if manifest.val is not None and (pos.epoch % cfg.train.val_every_epochs == 0 or finished()):
                with account.measure("validation"):
                    val = validate(train_model, manifest.val, cfg.data, info, normalize, autocast, local_batch,
                                   num_classes)
                logger.log(val, pos.step)
            save(val)  # the epoch's one checkpoint, written while the next epoch starts
            logger.log(account.window(), pos.step)
            if not finished() and guard.stop_requested():  # e.g. a signal during validation; a done run ends as done
                return _stop(logger, saver, account, info, pos.step)
        batches = None  # the workers stop now, inside the accounted time, not at interpreter exit
        if saver:
            with account.measure("checkpoint"):
                saver.wait()  # the last checkpoint is durable before the run reports success
        log.info("%s", account.table())
        return 0
    finally:
        if saver:
            saver.close()  # an error on the way out still waits for the save in flight
        logger.close()
        if lock:
            lock.release()


def _state(cfg: Config, info: dist.DistInfo, num_classes: int, train_samples: int, steps_per_epoch: int,
           ckpt_dir: Path) -> TrainState:
    """The model, optimizer and scaler, fresh or resumed from the checkpoint the main rank picks (every rank
    resumes from the same file)."""
    check_input_size(cfg.model, num_classes, cfg.data.image_size)  # e.g. AlexNet at 32 px: an error now
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = to_memory_format(build_model(cfg.model, num_classes).to(info.device), cfg.model.channels_last)
    ts = TrainState(model, optim.build_optimizer(cfg.optim, model),
                    torch.amp.GradScaler(info.device.type, enabled=cfg.amp == "fp16"), config=to_dict(cfg),
                    plan=data_plan(seed=cfg.seed, world_size=info.world_size, workers=cfg.data.workers,
                                   batch_size=cfg.train.batch_size, shuffle_buffer=cfg.data.shuffle_buffer,
                                   train_samples=train_samples, steps_per_epoch=steps_per_epoch))
    found = checkpoint.load_latest(ckpt_dir) if (cfg.checkpoint.resume and info.is_main) else None
    chosen = dist.broadcast_object(str(found[0]) if found else None, info)
    if chosen:
        ts.restore(found[1] if found else checkpoint.load(Path(chosen)), chosen)
    return ts


def _check_for_this_run(cfg: Config, info: dist.DistInfo) -> None:
    """What the config alone cannot check: it depends on the world size and the device."""
    if cfg.train.batch_size % info.world_size:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} does not split evenly over {info.world_size} ranks")
    if cfg.amp == "fp16" and info.device.type != "cuda":
        raise ConfigError("amp=fp16 needs CUDA; use amp=bf16 or amp=off on the CPU")
    check_decode(cfg.data, info.device)  # data.decode=gpu without CUDA stops here, before any work


def _stop(logger: loggers.Logger, saver: AsyncCheckpointer | None, account: TimeAccount, info: dist.DistInfo,
          step: int) -> int:
    """After a stop request's checkpoint: every rank waits until it is on disk, then exits."""
    logger.preempting()  # W&B shows the run as preempted (to be resumed), not finished
    if saver:
        with account.measure("checkpoint"):
            saver.wait()
    dist.barrier(info)  # nobody exits before the checkpoint is on disk
    if info.is_main:
        log.info("%s", account.table())
    log.warning("rank %d: stopped by a signal at step %d, checkpoint saved; resume with the same command",
                info.rank, step)
    return EXIT_PREEMPTED


def _nonfinite_stops(verdict: Verdict, scaler: torch.amp.GradScaler, cfg: Config, rank: int, step: int,
                     ckpt_dir: Path) -> bool:
    """Whether a non-finite loss ends the run: always without fp16's GradScaler, which otherwise skips the
    update, until run.max_nonfinite_steps in a row."""
    if not scaler.is_enabled() or verdict.streak >= cfg.run.max_nonfinite_steps:
        log.error(_nonfinite_message(rank, step, verdict.streak, ckpt_dir, scaler))
        return True
    log.warning("rank %d: non-finite loss at step %d; GradScaler skipped this update (%d in a row, the run "
                "stops at run.max_nonfinite_steps=%d)", rank, step, verdict.streak, cfg.run.max_nonfinite_steps)
    return False


def _nonfinite_message(rank: int, step: int, streak: int, ckpt_dir: Path, scaler: torch.amp.GradScaler) -> str:
    saved = checkpoint.list_checkpoints(ckpt_dir)
    last = f"the newest checkpoint, {saved[-1]}, is the last good state" if saved else "no checkpoint exists yet"
    skipped = f" after {streak} in a row, each skipped by GradScaler" if scaler.is_enabled() else ""
    return (f"rank {rank}: non-finite loss (inf/NaN) at step {step}{skipped}; all ranks stop here without "
            f"saving: {last}. Lower optim.lr, set train.grad_clip or check the data, then run the same "
            "command to resume from that checkpoint.")
