"""`python -m trainer.summary`: the model's layer table (output shapes, parameters, sizes in MB).

Uses torchinfo, the maintained successor of the seed's torchsummary, on the CPU.
"""

from __future__ import annotations

import argparse

from torchinfo import summary

from trainer.config import ModelConfig
from trainer.model import build_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer.summary", description=__doc__)
    parser.add_argument("--model", default="alexnet", help="alexnet or torchvision:<name>")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args(argv)
    model = build_model(ModelConfig(name=args.model), args.num_classes)
    stats = summary(
        model,
        input_size=(1, 3, args.image_size, args.image_size),
        col_names=("output_size", "num_params"),
        row_settings=("var_names",),
        device="cpu",
        verbose=0,
    )
    print(stats)


if __name__ == "__main__":
    main()
