"""What the region decoder's checks cost (issue 21: scan, work and pixel limits, range checks, the iMCU margin
that makes every box equal a whole decode): the extension as it was before them (built from git, commit
`--before`) against the current one, in one process, alternating rounds, best of each, on the train preset's
boxes of photos data_prep re-encoded to short side 256. CPU milliseconds per image; one JSON line.

  python -m bench.region_checks --images ../shared/imagenet-samples [--before ac9ac02]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np

from data_prep.encode import EncodeOptions, RejectImage, to_rgb_jpeg
from trainer.data import _jpeg_region, jpeg, transforms


def build_before(commit: str, where: str):
    """The extension at `commit`, compiled into `where` and loaded under another module name."""
    src = os.path.join(where, "_jpeg_region.c")
    with open(src, "w") as f:
        f.write(subprocess.run(["git", "show", f"{commit}:trainer/data/_jpeg_region.c"], check=True,
                               capture_output=True, text=True).stdout)
    lib = os.path.join(where, "_jpeg_region" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([sysconfig.get_config_var("CC").split()[0], "-O2", "-shared", "-fPIC",
                    f"-I{sysconfig.get_paths()['include']}", src, "-ljpeg", "-o", lib], check=True)
    spec = importlib.util.spec_from_file_location("before._jpeg_region", lib)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--before", default="ac9ac02", help="the commit before the checks")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    names = sorted(f for f in os.listdir(a.images) if f.endswith(".JPEG"))[:a.count]
    jpegs = []
    for n in names:
        try:
            jpegs.append(to_rgb_jpeg(open(os.path.join(a.images, n), "rb").read(),
                                     EncodeOptions(max_short_side=256)).data)
        except RejectImage:
            continue
    preset = transforms.TrainPreset(224)
    jobs = []
    for i, data in enumerate(jpegs):
        plan, h, w = preset.plan(data, random.Random(i))
        k = transforms.dct_reduction(plan, preset.margin)
        top, left, bh, bw = transforms.crop_box(plan, *jpeg.decoded_size(h, w, k), h, w)
        jobs.append((data, np.empty((bh, bw, 3), np.uint8), k, top, left))
    with tempfile.TemporaryDirectory() as tmp:
        before = build_before(a.before, tmp)
        runs = {"before": lambda j: before.decode_region(j[0], j[1], j[2], j[3], j[4], False),
                "now": lambda j: _jpeg_region.decode_region(j[0], j[1], j[2], j[3], j[4], False,
                                                            max_pixels=jpeg.MAX_PIXELS, max_scans=jpeg.MAX_SCANS)}
        best = {name: float("inf") for name in runs}
        for _ in range(a.rounds):
            for name, run in runs.items():
                t = time.process_time()
                for j in jobs:
                    run(j)
                best[name] = min(best[name], (time.process_time() - t) / len(jobs) * 1000)
    result = {"images": len(jobs), "ms_per_image": {k: round(v, 4) for k, v in best.items()},
              "now_over_before": round(best["now"] / best["before"], 4), "load_average": list(os.getloadavg())}
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
