"""Where the benchmarks find real photos: ../shared/imagenet-samples beside the project checkout."""

from pathlib import Path

SAMPLES = str(Path(__file__).resolve().parents[2] / "shared" / "imagenet-samples")
