"""Evaluate a checkpoint on the validation shards: loss, top-1 and top-5, every sample counted once.

    python -m trainer.evaluate --checkpoint runs/alexnet/checkpoints/step-000450360.pt
    torchrun --nproc_per_node=8 -m trainer.evaluate --checkpoint PATH data.root=/data/imagenet

The run's own config (stored in the checkpoint) is used, with `key=value` overrides on top (e.g.
data.root, device, data.workers), so the model runs as in training: same amp, memory format and
torch.compile (model.compile=false saves the compile time; the last bits of the loss may then
differ). A checkpoint is data, not code: its stored data.root is used only when it is a plain local
path; a `pipe:` command, template or URL root must be given again as data.root= on the command line.
Prints one JSON object on stdout from the main rank, with the metric names the training run logged
(val/top1, val/top5, val/loss, val/count), each class's top-1 (val/per_class_top1, None for a class
without samples) and the ten worst classes (val/worst_classes). The crop is data.eval_image_size (or
data.image_size) of a short side data.eval_resize. `--tta flip` averages the softmax over the crop and its
mirror, `--tta ten_crop` over the four corners and the centre of the resized image's central square and
their mirrors (the AlexNet paper's protocol, 10x the compute); the figures then carry the same names.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer import config
from trainer.errors import CheckpointError, ConfigError
from trainer.resilience import lifecycle

if TYPE_CHECKING:
    from trainer.dist import DistInfo


def evaluate_checkpoint(state: dict[str, Any], cfg: config.Config, info: DistInfo,
                        tta: str = "none", ema: bool = False) -> dict[str, Any]:
    """The validation metrics of the weights in `state` (with `ema`, their EMA's), on this process group
    (any world size), with test-time augmentation `tta` (trainer.tta.TTA_MODES) and per-class top-1."""
    import torch

    from trainer.data.manifest import load_manifest
    from trainer.data.transforms import Normalize
    from trainer.errors import DataError
    from trainer.model import build_model, check_input_size, maybe_compile, to_memory_format
    from trainer.resilience.state import stored_weights
    from trainer.step import autocast_for
    from trainer.tta import TTA, per_class_report, tta_data
    from trainer.validate import validate

    if cfg.amp == "fp16" and info.device.type != "cuda":
        raise config.ConfigError("amp=fp16 needs CUDA; pass amp=bf16 or amp=off to evaluate on the CPU")
    manifest = load_manifest(cfg.data.root)
    if manifest.val is None:
        raise DataError(f"{cfg.data.root}/_info.json has no validation split (splits.val) to evaluate on")
    num_classes = cfg.model.num_classes or len(manifest.class_names)
    check_input_size(cfg.model, num_classes, cfg.data.eval_size,
                     "data.eval_image_size" if cfg.data.eval_image_size else "data.image_size")
    model = build_model(cfg.model, num_classes)
    try:
        model.load_state_dict(stored_weights(state, "the checkpoint given", ema))
    except RuntimeError as e:  # e.g. a dataset with another number of classes
        raise config.ConfigError(
            f"the checkpoint's weights do not fit model.name={cfg.model.name} with {num_classes} classes "
            f"(model.num_classes or the classes of {cfg.data.root}): {e}"
        ) from e
    model = to_memory_format(model.to(info.device), cfg.model.channels_last)
    # Run the model as training ran it (compiled or not, same autocast), so the numbers agree.
    run_model = maybe_compile(model, cfg.model.compile)
    if tta != "none":
        run_model = TTA(run_model, tta, cfg.data.eval_size)
    local_batch = max(1, cfg.train.batch_size // info.world_size)
    per_class = torch.zeros((2, num_classes), device=info.device)
    metrics = validate(run_model, manifest.val, tta_data(cfg.data, tta), info,
                       Normalize(info.device, cfg.model.channels_last), autocast_for(info.device, cfg.amp),
                       local_batch, num_classes, per_class)
    return {**metrics, **per_class_report(per_class.cpu(), manifest.class_names), "tta": tta, "ema": ema,
            "step": state["step"], "world_size": info.world_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `python -m trainer`")
    parser.add_argument("--tta", choices=("none", "flip", "ten_crop"), default="none",
                        help="test-time augmentation: average the softmax over the mirror image (flip) or over "
                             "10 crops (ten_crop: corners, centre and their mirrors)")
    parser.add_argument("--ema", action="store_true",
                        help="evaluate the EMA of the weights (runs trained with train.ema_decay > 0)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.root=/data/imagenet device=cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    from trainer import dist  # after argument parsing: importing torch takes seconds
    from trainer.data import storage
    from trainer.resilience import checkpoint
    from trainer.resilience.state import stored_config, stored_weights

    try:
        state = checkpoint.load(Path(args.checkpoint))
        cfg = stored_config(state, args.checkpoint, args.overrides)
        stored_weights(state, f"checkpoint {args.checkpoint}", args.ema)  # refused before any process group
    except (CheckpointError, ConfigError) as e:
        parser.exit(2, f"error: {e}\n")
    if not _root_given(args.overrides) and not storage.is_local(cfg.data.root):
        parser.exit(2, f"error: the checkpoint's data.root={cfg.data.root!r} is not a plain local path (it is "
                       f"{storage.describe(cfg.data.root).split(';')[0]}), and a checkpoint is untrusted data: "
                       "its stored config never runs a command or opens a URL. Pass the dataset on the command "
                       "line, e.g. data.root=/data/imagenet (or that same root, if you trust it)\n")
    try:
        info = dist.setup(cfg.device, cfg.run.timeout_minutes)
        result = evaluate_checkpoint(state, cfg, info, args.tta, args.ema)
    except BaseException as e:  # noqa: BLE001 - logged once with its status; the process leaves at once
        return lifecycle.status_of(e, int(os.environ.get("RANK", "0")))
    dist.teardown(info)
    if info.is_main:
        print(json.dumps({"checkpoint": str(args.checkpoint), **result}), flush=True)
    return 0


def _root_given(overrides: list[str]) -> bool:
    """Whether the (trusted) command line sets data.root, as `data.root=...` or a whole `data={...}`."""
    return any(o.partition("=")[0].strip() in ("data.root", "data") for o in overrides)


if __name__ == "__main__":
    lifecycle.exit(main())
