"""Export a trained checkpoint for inference, and check that the export gives the same logits.

    python -m trainer.export --checkpoint runs/alexnet/checkpoints/step-000450360.pt --out alexnet.pt

writes three files next to each other:
  alexnet.pt    the model's plain state_dict (torch.load(..., weights_only=True); build the model with
                trainer.model.build_model, or copy the architecture)
  alexnet.pt2   a torch.export program with a dynamic batch dimension: torch.export.load(f).module()(x)
  alexnet.json  what the input must be (float NCHW, RGB, 0-1 scaled then normalised with mean/std,
                image_size) and the class names, plus the result of the logit check
Both exports take normalised float32 images and return fp32 logits (no autocast), on the CPU.
No dataset is needed: the class names come from the checkpoint's data.root only when that is a plain
local path still holding _info.json (a checkpoint is data: its config never runs a command or opens a
URL), or from --data-root, which may be any data.root form.
TorchScript is deprecated in torch 2.x (jit.trace/save warn), so the program is a torch.export one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.config import ModelConfig
from trainer.data import storage
from trainer.data.manifest import load_manifest
from trainer.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from trainer.errors import CheckpointError, ConfigError, DataError
from trainer.model import build_model
from trainer.resilience import checkpoint
from trainer.resilience.state import stored_config, stored_weights

CHECK_BATCH = 3  # not the export example's batch of 2: the check also exercises the dynamic batch size
TOLERANCE = 1e-4  # max |logit difference| accepted; the same fp32 kernels give 0 in practice


class ExportError(RuntimeError):
    """The export does not reproduce the checkpoint's logits; the message names the file."""


def _classes_in(state_dict: dict[str, torch.Tensor]) -> int:
    # The classifier is the last layer with a weight: its rows are the classes, with no dataset needed.
    last_weight = [v for k, v in state_dict.items() if k.endswith("weight")][-1]
    return last_weight.shape[0]


def _build(model_cfg: ModelConfig, num_classes: int, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """The model in eval mode, on the CPU, in fp32 and the default memory format."""
    model = build_model(model_cfg, num_classes)
    model.load_state_dict(state_dict)
    return model.eval()


def export(state_dict: dict[str, torch.Tensor], model_cfg: ModelConfig, out: Path, image_size: int,
           meta: dict[str, Any]) -> dict[str, Any]:
    """Write `out` (state_dict), `out`.pt2 (program) and `out`.json; reload both and compare logits."""
    num_classes = _classes_in(state_dict)
    model = _build(model_cfg, num_classes, state_dict)
    out.parent.mkdir(parents=True, exist_ok=True)
    program_path, meta_path = out.with_suffix(".pt2"), out.with_suffix(".json")
    torch.save(model.state_dict(), out)
    example = torch.randn(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, program_path)

    # Reload both files the way a user would, and compare with the checkpoint's model.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(CHECK_BATCH, 3, image_size, image_size, generator=generator)
    with torch.no_grad():
        reference = model(x)
        reloaded = _build(model_cfg, num_classes, torch.load(out, map_location="cpu", weights_only=True))(x)
        exported = torch.export.load(program_path).module()(x)
    diffs = {"state_dict": _max_diff(reloaded, reference), "program": _max_diff(exported, reference)}
    check = {"inputs": list(x.shape), "max_abs_logit_diff": diffs, "tolerance": TOLERANCE}
    meta_path.write_text(json.dumps({**meta, "num_classes": num_classes, "check": check}, indent=2) + "\n")
    for kind, diff in diffs.items():
        if not diff <= TOLERANCE:
            path = out if kind == "state_dict" else program_path
            raise ExportError(f"{path}: logits differ from the checkpoint's by {diff:.3g} (> {TOLERANCE})")
    return {"state_dict": str(out), "program": str(program_path), "meta": str(meta_path), "check": check}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `python -m trainer`")
    parser.add_argument("--out", required=True, help="state_dict file, e.g. alexnet.pt (.pt2/.json beside it)")
    parser.add_argument("--data-root", default=None,
                        help="where to read the class names (_info.json), in any data.root form; default: the "
                             "checkpoint's data.root, only if it is a plain local path")
    parser.add_argument("--ema", action="store_true",
                        help="export the EMA of the weights (runs trained with train.ema_decay > 0)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix in (".pt2", ".json"):
        parser.exit(2, f"error: --out {out} names the state_dict file (e.g. model.pt); "
                       "the .pt2 and .json files are written beside it\n")
    try:
        state = checkpoint.load(Path(args.checkpoint))
        cfg = stored_config(state, args.checkpoint)
        weights = stored_weights(state, f"checkpoint {args.checkpoint}", args.ema)
    except (CheckpointError, ConfigError) as e:
        parser.exit(2, f"error: {e}\n")
    meta = {
        "checkpoint": str(args.checkpoint), "step": state["step"], "model": cfg.model.name, "ema": args.ema,
        "image_size": cfg.data.eval_size, "eval_resize": cfg.data.eval_resize_px,
        "input": "float32 NCHW RGB, pixel/255 then (x - mean) / std", "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
        "class_names": _class_names(args.data_root if args.data_root is not None else cfg.data.root,
                                    trusted=args.data_root is not None),
    }
    try:
        result = export(weights, cfg.model, out, cfg.data.eval_size, meta)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


def _class_names(root: str, trusted: bool) -> list[str] | None:
    """The dataset's class names when its manifest is still where training read it; else None.

    An untrusted root (the checkpoint's) is read only when it is a plain local path.
    """
    if not trusted and not storage.is_local(root):
        print(f"note: class_names left out: the checkpoint's data.root={root!r} is not a plain local path, and "
              "a checkpoint's config never runs a command or opens a URL; pass --data-root to read them",
              file=sys.stderr)
        return None
    try:
        return list(load_manifest(root).class_names) or None
    except (DataError, OSError, ValueError, KeyError):
        return None


if __name__ == "__main__":
    sys.exit(main())
