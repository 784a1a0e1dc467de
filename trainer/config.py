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
    image_size: int = ranged(224, gt=0)  # training crop and evaluation crop
    eval_resize: int = ranged(256, gt=0)  # short side before the evaluation centre crop
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

    def __post_init__(self) -> None:
        if self.eval_resize < self.image_size:
            raise ConfigError(f"data.eval_resize={self.eval_resize} must be >= data.image_size={self.image_size}: "
                              "the evaluation centre crop is taken from the resized image")
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
    name: Literal["sgd"] = "sgd"  # the optimizer
    lr: float = ranged(0.01, gt=0)  # for the global batch size given in train.batch_size
    momentum: float = ranged(0.9, ge=0, lt=1)  # SGD momentum (its buffers are in every checkpoint)
    weight_decay: float = ranged(5e-4, ge=0)  # not applied to biases (parameters with ndim < 2)
    nesterov: bool = False  # Nesterov momentum


@dataclass(frozen=True)
class ScheduleConfig:
    name: Literal["step", "cosine", "constant"] = "step"  # the lr schedule, a pure function of the step
    step_epochs: float = ranged(30, gt=0)  # "step": multiply the lr by gamma every step_epochs epochs
    gamma: float = ranged(0.1, gt=0, le=1)  # "step": the factor at each step_epochs boundary
    warmup_epochs: float = ranged(0, ge=0)  # linear warmup from 0, for any schedule
    min_lr: float = ranged(0.0, ge=0)  # "cosine": the floor


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = ranged(90, gt=0)  # passes over the training split
    max_steps: int = ranged(0, ge=0)  # stop after this many optimizer steps; 0 = no cap
    batch_size: int = ranged(256, gt=0)  # global: split evenly over ranks
    label_smoothing: float = ranged(0.0, ge=0, lt=1)  # CrossEntropyLoss(label_smoothing=...); 0 = off
    log_every: int = ranged(20, gt=0)  # steps between training-metric logs (each one is a device sync)
    grad_clip: float = ranged(0.0, ge=0)  # max global grad norm; 0 = off
    val_every_epochs: int = ranged(1, gt=0)  # validate after every this many epochs, and always after the last one
    # micro-batches per optimizer step (gradient accumulation: the global batch of more GPUs on fewer). Each
    # rank's batch is split into accum_steps micro-batches, each the batch a rank of a world accum_steps times
    # larger would read, with DDP's all-reduce only after the last (docs/scaling.md)
    accum_steps: int = ranged(1, ge=1)


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
