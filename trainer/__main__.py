"""Train: `python -m trainer [--config FILE] [key=value ...]`.

    python -m trainer --config configs/smoke_cpu.yaml data.root=data/demo      # one CPU process
    torchrun --nproc_per_node=8 -m trainer data.root=/data/imagenet run.dir=runs/alexnet
    torchrun --nnodes=4 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 -m trainer ...

Without --config the ImageNet recipe configs/alexnet_imagenet.yaml is used. Re-running the same
command resumes from the newest valid checkpoint in run.dir.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from trainer import config
from trainer.resilience import lifecycle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML recipe (default: configs/alexnet_imagenet.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.epochs=10 optim.lr=0.02")
    args = parser.parse_args(argv)
    main_rank = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = config.load(args.config, args.overrides)
    except config.ConfigError as e:
        parser.exit(2, f"config error: {e}\n")

    try:
        from trainer import loop  # after the config is known good: importing torch takes seconds

        return loop.run(cfg)
    except BaseException as e:  # noqa: BLE001 - e.g. joining the process group; the loop handles the rest
        return lifecycle.status_of(e, int(os.environ.get("RANK", "0")))


if __name__ == "__main__":
    lifecycle.exit(main())
