"""The order of operations of a training run. No other module knows it.

    run: join the process group (a world of 1 without torchrun); every way out gets an exit status
    start (trainer/start.py): lock run.dir; read the dataset manifest; build model -> optimizer -> grad
        scaler; resume them from the newest valid checkpoint in run.dir
    _train, for each epoch from the resumed position (_epoch):
        for each step (_step): batch (the loader starts once: its workers serve every epoch);
            lr = schedule(step) (optim.lr scaled to the batch); per micro-batch: mix (mix.*), seed =
            f(seed, virtual rank, step); train_step; the EMA of the weights follows (train.ema_decay)
            guard verdict, all ranks agreeing in one small CPU collective: stop? non-finite loss? save now?
            every train.log_every steps: reduce loss over ranks, log (_log_train)
            save when the verdict says so (checkpoint.every_steps, checkpoint.every_minutes, a stop)
        _end_epoch: ranks compare batch counts and weight hashes (ddp.check_weights); validate the
            weights and their EMA (every train.val_every_epochs, and at the end) while the checkpoint is
            copied to host memory; then save it in the background (best.pt by the better top-1 of the
            two); log where the time went (monitoring/meters.py)
    run.profile_steps: a torch.profiler trace of those steps, data wait and step as named ranges
    on SIGTERM/SIGUSR1/Ctrl-C: all ranks agree at the next step, save, exit with EXIT_PREEMPTED
    on a non-finite loss: fp16 skips the step (GradScaler); otherwise stop without saving, EXIT_NONFINITE
    a collective waiting past run.timeout_minutes, or losing a rank: a clear error, EXIT_PEER_FAILED
    any other error: logged once on its rank with its status (lifecycle.py); the process leaves at once,
    its peers see the closed connection within seconds; nothing is saved over the last good checkpoint
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import torch

from trainer import dist, optim, step
from trainer.config import Config
from trainer.errors import EXIT_NONFINITE, EXIT_OK, EXIT_PEER_FAILED, EXIT_PREEMPTED, first_line
from trainer.monitoring import meters
from trainer.monitoring.meters import TimeAccount
from trainer.resilience import checkpoint, lifecycle
from trainer.resilience.guard import StopFlag, Verdict, ignore_stop_signals
from trainer.seeding import derive_seed
from trainer.start import Run, start
from trainer.tta import per_class_report
from trainer.validate import validate

log = logging.getLogger(__name__)

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
    account, stop = TimeAccount(), StopFlag()  # time from the process's start; SIGTERM/SIGUSR1/Ctrl-C from here on
    run = start(cfg, info, account, stop)
    try:
        while not run.finished():
            status = _epoch(run)
            if status is not None:
                return status
        run.batches.close()  # the workers stop now, inside the accounted time, not at interpreter exit
        run.checkpointer.wait()  # the last checkpoint is durable before the run reports success
        log.info("%s", account.table())
        return EXIT_OK
    finally:
        run.close()


def _epoch(run: Run) -> int | None:
    """Train from the current position to the epoch's end, then validate and save; the exit status when
    the run ends inside the epoch (a stop request, a non-finite loss), else None."""
    run.train_model.train()
    first_batch = run.pos.step_in_epoch
    run.meter.restart()
    while not run.epoch_done():
        run.profiler.step(run.pos.step)
        with run.profiler.region("data_wait"):
            images, targets = run.batches.next(run.pos.epoch, run.pos.step_in_epoch)
        verdict = _step(run, images, targets)
        if verdict.nonfinite and _nonfinite_stops(run, verdict):
            return EXIT_NONFINITE
        if run.pos.step % run.cfg.train.log_every == 0:
            _log_train(run)
        if verdict.save:
            run.checkpointer.save(run.ts)
        if verdict.stop:
            return _stop(run)
    return _end_epoch(run, first_batch)


def _step(run: Run, images: torch.Tensor, targets: torch.Tensor) -> Verdict:
    """One optimizer step, and the verdict all ranks agree on after it."""
    pos, cfg = run.pos, run.cfg
    first = pos.step == run.start_step
    if first:  # once per start: what the augmentation feeds the model
        run.logger.log_samples(run.normalize.pixels(images), targets, pos.step)
        run.account.start_training()
    with run.account.measure("compile" if first and cfg.model.compile else "step"), run.profiler.region("step"):
        optim.set_lr(run.ts.optimizer, run.lr_at(pos.step))
        accum = cfg.train.accum_steps  # micro-batch j is virtual rank rank x accum + j's batch (loader.py)
        ranks = [run.info.rank * accum + j for j in range(accum)]
        micro = [run.mixing.prepare(run.normalize(x), y, step=pos.step, epoch=pos.epoch, rank=r)
                 for r, x, y in zip(ranks, images.chunk(accum), targets.chunk(accum))]
        seeds = [derive_seed(cfg.seed, "step", r, pos.step) for r in ranks]  # dropout
        loss = step.train_step(run.train_model, micro, seeds, run.ts.optimizer, run.ts.scaler, run.mixing.loss,
                               run.autocast, cfg.train.grad_clip)
        run.meter.add(loss)
        if run.pace:
            time.sleep(run.pace)
        pos.advance()
        run.ts.update_ema()
        return run.guard.check(loss, pos.step, run.epoch_done())  # a sync point (CPU)


def _log_train(run: Run) -> None:
    loss, perf = run.meter.report(run.info)  # a sync point: only on log steps
    pos = run.pos
    run.logger.log({"train/loss": loss, "train/lr": run.ts.optimizer.param_groups[0]["lr"],
                    "train/epoch": pos.epoch + pos.step_in_epoch / run.steps_per_epoch,
                    **perf, **meters.gpu_memory(run.info.device)}, pos.step)


def _end_epoch(run: Run, first_batch: int) -> int | None:
    """The epoch's end: ranks compare what they did, validation runs while the checkpoint is copied to
    host memory, then the checkpoint is written in the background and the epoch's time logged."""
    pos, cfg, info = run.pos, run.cfg, run.info
    run.account.epoch_ended()
    run.batches.end_epoch()
    run.logger.log({"train/epoch_batches": dist.same_count(pos.step_in_epoch - first_batch, "batches this epoch",
                                                           info)}, pos.step)
    if cfg.ddp.check_weights and info.world_size > 1:  # replicas that drifted apart stop here
        run.logger.log({"ddp/weights_digest": dist.check_weights_agree(run.ts.model, info)}, pos.step)
    if pos.step_in_epoch >= run.steps_per_epoch:
        pos.next_epoch()
    run.checkpointer.stage(run.ts)  # safe while validation runs: it only reads the weights
    val = None
    if run.manifest.val is not None and (pos.epoch % cfg.train.val_every_epochs == 0 or run.finished()):
        with run.account.measure("validation"):
            val, worst = _validate(run)
        run.logger.log({**val, "val/worst_classes": worst}, pos.step)  # the worst classes: a W&B table
    run.checkpointer.save(run.ts, val)  # the epoch's one checkpoint, written while the next epoch starts
    run.logger.log(run.account.window(), pos.step)
    if not run.finished() and run.guard.stop_requested():  # e.g. a signal during validation; a done run ends as done
        return _stop(run)
    return None


def _validate(run: Run) -> tuple[dict[str, float], list[dict]]:
    """val/* of the weights and, with train.ema_decay, val_ema/* of their EMA; and the weights' ten worst
    classes by top-1."""
    assert run.manifest.val is not None  # _end_epoch validates only when there is a split
    check = functools.partial(validate, split=run.manifest.val, cfg=run.cfg.data, info=run.info,
                              normalize=run.normalize, autocast=run.autocast, local_batch=run.local_batch,
                              num_classes=run.num_classes)
    per_class = torch.zeros((2, run.num_classes), device=run.info.device)
    dist.broadcast_buffers(run.ts.model, run.info)  # every rank evaluates the checkpoint's statistics
    val = check(run.train_model, per_class=per_class)
    if run.ts.ema is not None:
        dist.broadcast_buffers(run.ts.ema.module, run.info)
        val |= {k.replace("val/", "val_ema/", 1): v for k, v in check(run.ts.ema.module).items()}
    return val, per_class_report(per_class.cpu(), run.manifest.class_names)["val/worst_classes"]


def _stop(run: Run) -> int:
    """After a stop request's checkpoint: every rank waits until it is on disk, then exits."""
    run.logger.preempting()  # W&B shows the run as preempted (to be resumed), not finished
    run.checkpointer.wait()
    dist.barrier(run.info)  # nobody exits before the checkpoint is on disk
    if run.info.is_main:
        log.info("%s", run.account.table())
    log.warning("rank %d: stopped by a signal at step %d, checkpoint saved; resume with the same command",
                run.info.rank, run.pos.step)
    return EXIT_PREEMPTED


def _nonfinite_stops(run: Run, verdict: Verdict) -> bool:
    """Whether a non-finite loss ends the run: always without fp16's GradScaler, which otherwise skips the
    update, until run.max_nonfinite_steps in a row."""
    scaler, rank, at, limit = run.ts.scaler, run.info.rank, run.pos.step, run.cfg.run.max_nonfinite_steps
    if not scaler.is_enabled() or verdict.streak >= limit:
        saved = checkpoint.list_checkpoints(Path(run.cfg.run.dir) / "checkpoints")
        last = f"the newest checkpoint, {saved[-1]}, is the last good state" if saved else "no checkpoint exists yet"
        skipped = f" after {verdict.streak} in a row, each skipped by GradScaler" if scaler.is_enabled() else ""
        log.error(f"rank {rank}: non-finite loss (inf/NaN) at step {at}{skipped}; all ranks stop here without "
                  f"saving: {last}. Lower optim.lr, set train.grad_clip or check the data, then run the same "
                  "command to resume from that checkpoint.")
        return True
    log.warning("rank %d: non-finite loss at step %d; GradScaler skipped this update (%d in a row, the run "
                "stops at run.max_nonfinite_steps=%d)", rank, at, verdict.streak, limit)
    return False
