"""The run's configuration: one frozen dataclass per concern, loaded from YAML plus `key=value` overrides.

Unknown keys and values of the wrong type are errors that name the key, so a typo never starts a run.
This module does not import torch; the resolved config is written to the run directory by the loop.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from trainer.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "alexnet_imagenet.yaml"


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric field, checked when a config is built (`ranged`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    why: str = ""  # said after the bound when a value is refused

    def check(self, key: str, value: float) -> None:
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        if not ok:
            raise ConfigError(f"{key} must be {self.describe()}, got {value!r}{f': {self.why}' if self.why else ''}")

    def describe(self) -> str:
        low = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else ""
        high = f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}" if self.lt is not None else ""
        return " and ".join(b for b in (low, high) if b)


def ranged(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None, why: str = "") -> Any:
    """A field with its default and its allowed range, declared together (checked by `_build`)."""
    return field(default=default, metadata={"range": Range(ge, gt, le, lt, why)})


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/imagenet"  # holds _info.json: a path, a pipe: command or a URL (docs/operations.md)
    workers: int = ranged(8, ge=0)  # DataLoader worker processes per rank
    # samples per worker held as raw JPEG bytes for shuffling; with `prefetch` it bounds memory: a worker
    # adds ~ shuffle_buffer x mean JPEG bytes + one uint8 batch (local batch x size^2 x 3) + its largest
    # decoded image + ~20 MB to its idle size, and each rank holds workers x prefetch batches in shared
    # memory (docs/benchmarks.md, "Input pipeline")
    shuffle_buffer: int = ranged(2000, gt=0)
    image_size: int = ranged(224, gt=0)  # training crop (and evaluation crop unless eval_image_size is set)
    # evaluation crop; 0: image_size. Training at a lower resolution than testing pays (FixRes, Touvron et
    # al. 2019): torchvision's recipes train at 176 and test at 224
    eval_image_size: int = ranged(0, ge=0)
    # short side before the evaluation centre crop; 0: eval crop x 256/224 (256 for a 224 crop)
    eval_resize: int = ranged(256, ge=0)
    prefetch: int = ranged(4, gt=0)  # batches each worker keeps ready
    # one set of training workers for the whole run: they go on into the next epoch (and prefetch its first
    # batches during validation) instead of starting again, shuffle buffers refilled, every epoch
    persistent_workers: bool = True
    # where JPEGs are decoded: "cpu" in the DataLoader workers (libjpeg-turbo), or "gpu": workers send the
    # bytes and crop parameters, this process decodes with nvJPEG and augments on the GPU (needs CUDA)
    decode: Literal["cpu", "gpu"] = "cpu"
    # decode="cpu": decode large JPEGs at 1/2, 1/4 or 1/8 size (libjpeg-turbo DCT scaling) when the crop
    # keeps at least this many decoded pixels per output pixel in both dimensions. 2: within ~0.1/255 of a
    # full decode on average; 1: fastest, slightly sharper crops; 0: always decode at full size
    reduced_decode_margin: float = 2.0
    # training samples per rank that may fail to decode before the run stops with an error. Each one is
    # logged with its shard and key and left out of the loss (its label becomes -100, the loss's
    # ignore_index), so batches keep their size and ranks their step counts
    max_bad_samples: int = ranged(10, ge=0)
    # after crop and flip, on the uint8 crop (trainer/data/augment.py), every draw from the sample's seed;
    # with data.decode=gpu the worker draws and the device applies:
    # "trivialaugment" (TrivialAugmentWide, Mueller & Hutter 2021), "randaugment" (Cubuk et al. 2020)
    auto_augment: Literal["none", "trivialaugment", "randaugment"] = "none"
    randaugment_ops: int = ranged(2, ge=1, le=14)  # auto_augment=randaugment: ops applied to each image
    randaugment_magnitude: int = ranged(9, ge=0, le=30)  # auto_augment=randaugment: of 31 bins (0..30)
    # probability of erasing one random rectangle of each training image (Zhong et al. 2020); 0 = off
    random_erasing: float = ranged(0.0, ge=0, le=1)

    @property
    def eval_size(self) -> int:
        """The evaluation crop: data.eval_image_size, or data.image_size when that is 0."""
        return self.eval_image_size or self.image_size

    @property
    def eval_resize_px(self) -> int:
        """The evaluation short side: data.eval_resize, or the crop x 256/224 when that is 0."""
        return self.eval_resize or int(round(self.eval_size * 256 / 224))

    def __post_init__(self) -> None:
        if self.eval_resize_px < self.eval_size:
            which = "data.eval_image_size" if self.eval_image_size else "data.image_size"
            raise ConfigError(f"data.eval_resize={self.eval_resize} must be >= {which}={self.eval_size}: "
                              "the evaluation centre crop is taken from the resized image (0: scale it with "
                              "the crop, 256/224)")
        if self.auto_augment != "randaugment" and (self.randaugment_ops, self.randaugment_magnitude) != (2, 9):
            raise ConfigError(f"data.randaugment_ops/randaugment_magnitude apply only to data.auto_augment="
                              f"randaugment (it is {self.auto_augment!r})")
        if self.reduced_decode_margin != 0 and not self.reduced_decode_margin >= 1:
            raise ConfigError(f"data.reduced_decode_margin must be 0 (off) or >= 1, got {self.reduced_decode_margin!r}")


BUILTIN_MODELS = ("alexnet", "alexnet_bn", "tiny_cnn")  # trainer/model.py builds them


@dataclass(frozen=True)
class ModelConfig:
    name: str = "alexnet"  # "alexnet" (the seed), "alexnet_bn", "tiny_cnn" (smoke runs) or "torchvision:<name>"
    num_classes: int = ranged(0, ge=0)  # 0: take the number of classes from the dataset manifest
    # before each of the classifier's hidden layers (AlexNet); torchvision models: ignored
    dropout: float = ranged(0.5, ge=0, lt=1)
    channels_last: bool = False  # NHWC weights and activations: faster convolutions on tensor cores
    compile: bool = False  # torch.compile the model (paid once per start)

    def __post_init__(self) -> None:
        if self.name not in BUILTIN_MODELS and not (
                self.name.startswith("torchvision:") and len(self.name) > len("torchvision:")):
            raise ConfigError(f"model.name={self.name!r} is unknown: use {', '.join(BUILTIN_MODELS)} or "
                              "torchvision:<name> (e.g. torchvision:resnet50)")


@dataclass(frozen=True)
class OptimConfig:
    # "sgd"; "lars" (You et al. 2017: SGD with a per-layer lr scaled by trust_coeff x |w| / |g + wd w|;
    # biases and norm parameters, the weight-decay-0 group, are neither adapted nor decayed); "adamw"
    name: Literal["sgd", "lars", "adamw"] = "sgd"
    # for the global batch size given in train.batch_size, or for lr_base_batch when that is set
    lr: float = ranged(0.01, gt=0)
    # linear scaling rule (Goyal et al. 2017): optim.lr is for this global batch, and the run uses
    # lr x train.batch_size / lr_base_batch; 0 = off (optim.lr is used as it is)
    lr_base_batch: int = ranged(0, ge=0)
    momentum: float = ranged(0.9, ge=0, lt=1)  # SGD and LARS momentum (its buffers are in every checkpoint)
    weight_decay: float = ranged(5e-4, ge=0)  # not applied to biases (parameters with ndim < 2)
    nesterov: bool = False  # Nesterov momentum (sgd, lars)
    trust_coeff: float = ranged(0.001, gt=0, le=1)  # lars: the trust coefficient (eta)
    # lars: LARC clipping, the per-layer lr is min(trust ratio, lr) (NVIDIA apex LARC "clip" mode)
    lars_clip: bool = False
    adam_beta1: float = ranged(0.9, ge=0, lt=1)  # adamw: the first moment's decay
    adam_beta2: float = ranged(0.999, ge=0, lt=1)  # adamw: the second moment's decay
    adam_eps: float = ranged(1e-8, gt=0)  # adamw: added to the denominator

    def __post_init__(self) -> None:
        if self.nesterov and (self.name == "adamw" or self.momentum == 0):
            raise ConfigError(f"optim.nesterov=true needs optim.name=sgd or lars with optim.momentum > 0 "
                              f"(got name={self.name}, momentum={self.momentum})")
        if self.name != "lars" and (self.lars_clip or self.trust_coeff != 0.001):
            raise ConfigError(f"optim.lars_clip and optim.trust_coeff apply only to optim.name=lars "
                              f"(it is {self.name!r})")
        if self.name != "adamw" and (self.adam_beta1, self.adam_beta2, self.adam_eps) != (0.9, 0.999, 1e-8):
            raise ConfigError(f"optim.adam_beta1/adam_beta2/adam_eps apply only to optim.name=adamw "
                              f"(it is {self.name!r})")


@dataclass(frozen=True)
class ScheduleConfig:
    # the lr schedule, a pure function of the step: "poly" decays as (1 - t)^power to min_lr (LARS papers);
    # "onecycle" rises linearly to the lr at peak_epochs, then falls linearly to min_lr at the end (FFCV's
    # triangular schedule)
    name: Literal["step", "cosine", "constant", "poly", "onecycle"] = "step"
    step_epochs: float = ranged(30, gt=0)  # "step": multiply the lr by gamma every step_epochs epochs
    gamma: float = ranged(0.1, gt=0, le=1)  # "step": the factor at each step_epochs boundary
    warmup_epochs: float = ranged(0, ge=0)  # linear warmup from 0, for any schedule but onecycle (its own rise)
    min_lr: float = ranged(0.0, ge=0)  # "cosine", "poly", "onecycle": the floor
    power: float = ranged(2.0, gt=0)  # "poly": the exponent; 1 = linear decay, the LARS papers use 2
    peak_epochs: float = ranged(2.0, gt=0)  # "onecycle": where the linear rise ends and the fall begins

    def __post_init__(self) -> None:
        if self.name == "onecycle" and self.warmup_epochs > 0:
            raise ConfigError(f"schedule.warmup_epochs={self.warmup_epochs} does not combine with schedule.name="
                              "onecycle, whose rise to the peak is its warmup: set schedule.peak_epochs instead")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = ranged(90, gt=0)  # passes over the training split
    max_steps: int = ranged(0, ge=0)  # stop after this many optimizer steps; 0 = no cap
    batch_size: int = ranged(256, gt=0)  # global: split evenly over ranks
    label_smoothing: float = ranged(0.0, ge=0, lt=1)  # CrossEntropyLoss(label_smoothing=...); 0 = off
    log_every: int = ranged(20, gt=0)  # steps between training-metric logs (each one is a device sync)
    grad_clip: float = ranged(0.0, ge=0)  # max global grad norm; 0 = off
    val_every_epochs: int = ranged(1, gt=0)  # validate after every this many epochs, and always after the last one
    # exponential moving average of the weights, updated after every optimizer step (trainer/ema.py): the
    # EMA keeps decay x itself + (1 - decay) x the weights; 0 = off. Validated as val_ema/*, in every checkpoint
    ema_decay: float = ranged(0.0, ge=0, lt=1)
    # EMA warmup: at optimizer step t (1, 2, ...) the decay is min(ema_decay, (1 + t) / (10 + t)), so that
    # the early, random weights fade fast; false: ema_decay from the first step
    ema_warmup: bool = True
    # micro-batches per optimizer step (gradient accumulation: the global batch of more GPUs on fewer). Each
    # rank's batch is split into accum_steps micro-batches, each the batch a rank of a world accum_steps times
    # larger would read, with DDP's all-reduce only after the last (docs/scaling.md)
    accum_steps: int = ranged(1, ge=1)


@dataclass(frozen=True)
class MixConfig:
    """Mixup and CutMix of training batches on the device (trainer/mixing.py), with train.label_smoothing
    folded into the soft targets as timm's Mixup does. Off unless an alpha is > 0."""

    mixup_alpha: float = ranged(0.0, ge=0)  # lam ~ Beta(alpha, alpha) for mixup; 0 = no mixup (0.2-0.8 usual)
    cutmix_alpha: float = ranged(0.0, ge=0)  # lam ~ Beta(alpha, alpha) for the CutMix box; 0 = no CutMix (1.0)
    prob: float = ranged(1.0, ge=0, le=1)  # probability that a batch is mixed at all
    switch_prob: float = ranged(0.5, ge=0, le=1)  # both alphas > 0: probability of CutMix instead of mixup
    off_epoch: int = ranged(0, ge=0)  # no mixing from this epoch (0-based) on, e.g. the last few; 0 = never off

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __post_init__(self) -> None:
        if not self.enabled and (self.prob, self.switch_prob, self.off_epoch) != (1.0, 0.5, 0):
            raise ConfigError("mix.prob, mix.switch_prob and mix.off_epoch need mix.mixup_alpha > 0 or "
                              "mix.cutmix_alpha > 0 (both are 0: mixing is off)")
        if self.enabled and self.prob == 0:
            raise ConfigError("mix.prob=0 with a mixing alpha > 0 never mixes: set the alphas to 0 to turn it off")


@dataclass(frozen=True)
class CheckpointConfig:
    """When to save and what to keep; docs/fault_tolerance.md says how resuming uses them."""

    # also save every this many steps; 0 = only at epoch ends (and on a stop signal)
    every_steps: int = ranged(0, ge=0)
    # also save when this long has passed since the last save (any rank's clock); 0 = off
    every_minutes: float = ranged(0, ge=0)
    # step checkpoints kept (>= 2: a damaged newest one falls back to the one before)
    keep_last: int = ranged(2, ge=2, why="when the newest checkpoint is damaged, resuming falls back to the one "
                                         "before it")
    keep_best: bool = True  # keep best.pt, the epoch-end checkpoint with the highest val/top1 so far
    resume: bool = True  # resume from the newest valid checkpoint in run.dir
    # write checkpoints on a background thread: the loop blocks only for the copy into host memory;
    # false: write them on the loop's thread (fsync included) before training goes on
    async_save: bool = True


@dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases, from the main rank only; docs/monitoring.md. W&B trouble never stops a run."""

    mode: Literal["online", "offline", "disabled"] = "offline"  # online falls back to offline on any trouble
    project: str = "imagenet-trainer"  # the W&B project the run is logged to
    entity: str | None = None  # team or user; None: the API key's default entity
    name: str | None = None  # display name; None: the run directory's name
    group: str | None = None  # groups runs in the UI (e.g. one sweep)
    tags: list[str] = field(default_factory=list)  # tags=a,b on the command line
    log_checkpoints: bool = False  # upload checkpoints as artifacts (aliases latest, best): ~407 MB each for AlexNet
    image_grid: int = ranged(16, ge=0)  # augmented training images shown (with class names) at start; 0 = none
    # an online start (login, server) slower than this falls back to offline
    init_timeout_s: float = ranged(60.0, gt=0)
    # stop waiting for uploads at exit after this; `wandb sync` sends the rest
    finish_timeout_s: float = ranged(300.0, gt=0)


@dataclass(frozen=True)
class RunConfig:
    dir: str = "runs/alexnet"  # config.yaml, metrics.jsonl, checkpoints/ and W&B files go here
    # a collective that waits longer than this fails instead of hanging
    timeout_minutes: float = ranged(10, gt=0)
    # amp=fp16: stop after this many inf/NaN losses in a row (GradScaler skips each one); with amp
    # off/bf16 the first non-finite loss stops the run
    max_nonfinite_steps: int = ranged(20, gt=0)
    # torch.profiler window "FIRST-END" (optimizer steps FIRST..END-1, e.g. "100-110"): a trace of each rank
    # in run.dir/profile/ (trainer/monitoring/profiler.py); "" = off
    profile_steps: str = ""

    def __post_init__(self) -> None:
        step_window(self.profile_steps, "run.profile_steps")


@dataclass(frozen=True)
class DDPConfig:
    """Gradient communication between ranks; docs/scaling.md says when each option pays."""

    # gradients go out in buckets of this size, overlapping the rest of backward
    bucket_cap_mb: float = ranged(25, gt=0)
    grad_compression: Literal["none", "bf16"] = "none"  # "bf16": all-reduce half the bytes (a DDP comm hook)
    check_weights: bool = True  # at each epoch end ranks compare a hash of their weights; a mismatch stops


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    run: RunConfig = field(default_factory=RunConfig)
    ddp: DDPConfig = field(default_factory=DDPConfig)
    seed: int = 0  # initial weights, shuffling, augmentation and dropout all derive from it
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available (nccl), else the CPU (gloo)
    amp: Literal["off", "bf16", "fp16"] = "off"  # autocast dtype; fp16 adds a GradScaler and needs CUDA

    def __post_init__(self) -> None:
        if self.model.compile and self.ddp.bucket_cap_mb < 1:
            # DDPOptimizer splits the compiled graph at bucket boundaries and fails on sub-MB buckets
            raise ConfigError(f"ddp.bucket_cap_mb={self.ddp.bucket_cap_mb} must be >= 1 with model.compile=true")
        if self.schedule.name == "onecycle" and self.schedule.peak_epochs >= self.train.epochs:
            raise ConfigError(f"schedule.peak_epochs={self.schedule.peak_epochs} must be < train.epochs="
                              f"{self.train.epochs}: the onecycle schedule falls from the peak to the end")
        if self.schedule.warmup_epochs >= self.train.epochs:
            raise ConfigError(f"schedule.warmup_epochs={self.schedule.warmup_epochs} must be < train.epochs="
                              f"{self.train.epochs}")
        if self.mix.off_epoch >= self.train.epochs:
            raise ConfigError(f"mix.off_epoch={self.mix.off_epoch} must be < train.epochs={self.train.epochs} "
                              "(0 = mix every epoch)")


def step_window(text: str, key: str = "run.profile_steps") -> tuple[int, int] | None:
    """ "FIRST-END" -> (FIRST, END), END exclusive; "" -> None; a ConfigError naming `key` otherwise."""
    if not text.strip():
        return None
    first, sep, end = text.strip().partition("-")
    if not (sep and first.strip().isdigit() and end.strip().isdigit() and int(first) < int(end)):
        raise ConfigError(f"{key}={text!r} must be \"FIRST-END\", two step numbers with FIRST < END (END "
                          "exclusive), e.g. \"100-110\"; \"\" = off")
    return int(first), int(end)


def load(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML recipe (the ImageNet recipe when None) and apply dotted `key=value` overrides."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with open(path) as f:
        try:
            tree = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    _apply_overrides(tree, overrides)
    return _build(Config, tree, "")


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain data, for config.yaml, checkpoints and W&B."""
    return dataclasses.asdict(cfg)


def from_dict(tree: dict[str, Any], overrides: Sequence[str] = ()) -> Config:
    """A config from plain data (e.g. a checkpoint's), with the same `key=value` overrides as `load`."""
    tree = copy.deepcopy(tree)
    _apply_overrides(tree, overrides)
    return _build(Config, tree, "")


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _apply_overrides(tree: dict, overrides: Sequence[str]) -> None:
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.epochs=10)")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({e}); quote it") from e
        _set_dotted(tree, key.strip(), value)


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {'.'.join(parents[: i + 1])} is a value, not a section")
        node = child
    node[leaf] = value


def _build(cls: type, tree: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(tree, dict):
        raise ConfigError(f"{where}: expected a section (a mapping), got {tree!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in tree.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key + ".")
        else:
            kwargs[name] = _coerce(value, hint, key)
    cfg = cls(**kwargs)
    _check_ranges(cfg, prefix)
    return cfg


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {' | '.join(map(str, choices))}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is list:
        (inner,) = typing.get_args(hint)
        if isinstance(value, str):  # tags=a,b on the command line
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "1e20" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. a run name of digits
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be of type {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _check_ranges(cfg: Any, prefix: str) -> None:
    for f in dataclasses.fields(cfg):
        key, value = f"{prefix}{f.name}", getattr(cfg, f.name)
        if "range" in f.metadata:
            f.metadata["range"].check(key, value)
        if key == "run.dir" and not value.strip():
            raise ConfigError("run.dir is empty: name the folder for this run's checkpoints and logs, "
                              "e.g. runs/alexnet")
