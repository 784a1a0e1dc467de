"""Command line: `python -m data_prep {synthetic,folder,imagenet,verify,merge} ...`.

  python -m data_prep synthetic --out /tmp/syn
  python -m data_prep folder --train /tmp/syn/train --val /tmp/syn/val --out /tmp/shards --shard-size 50
  python -m data_prep imagenet --train ILSVRC2012_img_train.tar --val ILSVRC2012_img_val.tar \
      --devkit ILSVRC2012_devkit_t12.tar.gz --out /data/imagenet-wds --workers 16
  python -m data_prep verify /data/imagenet-wds
"""

from __future__ import annotations

import argparse
import os
import sys

from . import outlock
from .encode import DEFAULT_MAX_PIXELS, EncodeOptions
from .options import check_prep, int_in, plain_name
from .prepare import DEFAULT_SHARD_SIZE, PrepConfig, prepare
from .records import PrepError


def _prep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder for shards and _info.json")
    p.add_argument("--shard-size", type=int_in(1), default=DEFAULT_SHARD_SIZE,
                   help="images per shard (default %(default)s: ~1,000 shards for ImageNet train)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed")
    p.add_argument("--workers", type=int_in(1), default=os.cpu_count() or 1,
                   help="worker processes; shards are the unit of work (default: all cores)")
    p.add_argument("--prefix", type=plain_name, default="imagenet", help="shard name prefix")
    p.add_argument("--name", default=None, help="dataset name in _info.json (default: prefix)")
    p.add_argument("--max-short-side", type=int_in(1), default=None,
                   help="re-encode images whose short side exceeds N (default: keep bytes)")
    p.add_argument("--quality", type=int_in(1, 100), default=90,
                   help="JPEG quality (1-100) of re-encoded images")
    p.add_argument("--max-pixels", type=int_in(1), default=DEFAULT_MAX_PIXELS,
                   help="reject images with more pixels (default %(default)s)")
    p.add_argument("--num-parts", type=int_in(1), default=1, help="split the shards over P machines")
    p.add_argument("--part", type=int_in(0), default=0, help="which part (0..P-1) this machine writes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synthetic", help="write a small learnable ImageNet-shaped image folder")
    p.add_argument("--out", required=True)
    p.add_argument("--classes", type=int_in(1), default=10)
    p.add_argument("--train-per-class", type=int_in(1), default=60)
    p.add_argument("--val-per-class", type=int_in(0), default=10)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("folder", help="image folder (class subfolders) -> shards")
    p.add_argument("--train", required=True, help="folder of class subfolders")
    p.add_argument("--val", help="folder of class subfolders")
    _prep_args(p)
    p = sub.add_parser("imagenet", help="ImageNet archives / Kaggle layout / folders -> shards")
    p.add_argument("--train", help="ILSVRC2012_img_train.tar, a folder of class tars or of class folders")
    p.add_argument("--val", help="ILSVRC2012_img_val.tar, its extracted folder, or class folders")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--devkit", help="ILSVRC2012_devkit_t12.tar.gz (or its extracted folder)")
    labels.add_argument("--val-labels", help="Kaggle LOC_val_solution.csv")
    p.add_argument("--synsets", help="Kaggle LOC_synset_mapping.txt for class names "
                                     "(default: found next to --val-labels)")
    _prep_args(p)
    p = sub.add_parser("verify", help="check a shard folder against its _info.json")
    p.add_argument("dir")
    p.add_argument("--workers", type=int_in(1), default=os.cpu_count() or 1)
    p = sub.add_parser("merge", help="write _info.json after all --num-parts parts finished")
    p.add_argument("dir")
    return ap


def _config(a: argparse.Namespace) -> PrepConfig:
    opts = EncodeOptions(a.max_short_side, a.quality, a.max_pixels)
    return PrepConfig(a.out, a.shard_size, a.seed, a.workers, a.prefix, opts,
                      a.num_parts, a.part, not a.no_progress)


def _prep(a: argparse.Namespace, held: list) -> int:
    """`folder` / `imagenet`: options, inputs, then --out held (see outlock) for the writing."""
    from . import inputs
    from .report import print_summary

    check_prep(a)
    if os.path.isdir(a.out):        # an existing --out: refuse at once if another run holds it
        held += outlock.hold(a.out, a.num_parts, a.part)
    if a.command == "folder":
        got = inputs.folder_inputs(a.train, a.val)
    else:
        got = inputs.imagenet_inputs(a.train, a.val, a.devkit, a.val_labels, a.synsets)
    got.params["name"] = a.name or a.prefix
    if not held:                    # created only now: bad inputs leave no folder behind
        held += outlock.hold(a.out, a.num_parts, a.part)
    print_summary(prepare(got, _config(a)))
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    held: list = []
    try:
        if a.command == "synthetic":
            from .synthetic import write_synthetic
            counts = write_synthetic(a.out, a.classes, a.train_per_class, a.val_per_class, a.seed)
            print(f"wrote {counts['train']} train and {counts['val']} val images to {a.out}")
            return 0
        if a.command == "verify":
            from .report import print_report
            from .verify import verify
            problems, samples = verify(a.dir, a.workers)
            print_report(a.dir, problems, samples)
            return 1 if problems else 0
        if a.command == "merge":
            from .manifest import merge
            from .plan import load_plan
            plan = load_plan(a.dir)     # a data_prep folder, before the lock file is put in it
            held += outlock.hold(a.dir)
            info = merge(a.dir, plan)
            counts = {s: v["num_samples"] for s, v in info["splits"].items()}
            print(f"wrote {os.path.join(a.dir, '_info.json')}: {counts}")
            return 0
        return _prep(a, held)
    except PrepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to finish (finished shards are kept)",
              file=sys.stderr)
        return 130
    finally:
        outlock.release(held)


if __name__ == "__main__":
    sys.exit(main())
