"""Fuzz the region decoder: mutations of JPEGs of every layout (bench/jpeg_layouts.py), decoded in child
processes, so a crash is a signal exit charged to the input that caused it. Each input is decoded whole and
in random boxes: no crash, no decode past a time bound, and region == whole wherever both succeed.

  python -m bench.fuzz_decode --seconds 300     # JSON summary on stdout (docs/benchmarks.md)
Not coverage-guided: atheris would need the extension built with clang's -fsanitize=fuzzer (not done).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import random
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

MARKERS = [b"\xff\xd8", b"\xff\xd9", b"\xff\xda", b"\xff\xc0", b"\xff\xc2", b"\xff\xc4", b"\xff\xdb", b"\xff\xdd",
           b"\xff\xd0", b"\xff\xcc", b"\xff\x00"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four of: bit flips, byte sets, truncation, a marker or 16-bit size written in, a slice repeated
    (more scans), a slice deleted."""
    d = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op, i = rng.randrange(7), rng.randrange(max(1, len(d)))
        if op == 0 and d:
            d[i] ^= 1 << rng.randrange(8)
        elif op == 1 and d:
            d[i] = rng.choice([0, 1, 0x7F, 0x80, 0xFE, 0xFF, rng.randrange(256)])
        elif op == 2:
            d = d[:i]
        elif op == 3:
            d[i:i] = rng.choice(MARKERS)
        elif op == 4 and len(d) > i + 2:
            d[i:i + 2] = struct.pack(">H", rng.choice([0, 1, 2, 255, 9459, 65500, 65535, rng.randrange(65536)]))
        elif op == 5:
            j = min(len(d), i + rng.randint(1, 400))
            d[j:j] = d[i:j] * rng.randint(1, 50)
        elif op == 6:
            del d[i:i + rng.randint(1, 64)]
    return bytes(d)


def boxes(rng: random.Random, rows: int, cols: int, n: int) -> list[tuple[int, int, int, int]]:
    """(top, left, h, w): the last row, the last column, a corner, then random boxes."""
    out = [(rows - 1, 0, 1, cols), (0, cols - 1, rows, 1), (rows - 1, cols - 1, 1, 1)]
    for _ in range(n):
        h, w = rng.randint(1, rows), rng.randint(1, cols)
        out.append((rng.randint(0, rows - h), rng.randint(0, cols - w), h, w))
    return out


def check_one(data: bytes, seed: int) -> dict:
    """Decode whole at each scale, then boxes of it; what differs, what was refused, how long the slowest took."""
    from trainer.data._jpeg_region import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SCANS, Unsupported, decode_region

    rng = random.Random(seed)
    result: dict = {"whole": 0, "boxes": 0, "refused": 0, "diffs": [], "slowest": 0.0}
    kw = {"max_pixels": DEFAULT_MAX_PIXELS, "max_scans": DEFAULT_MAX_SCANS}  # trainer/data/jpeg.py's limits
    try:
        width, height = Image.open(io.BytesIO(data)).size  # only the header is read
    except Exception:  # noqa: BLE001 - any header PIL cannot read: a box the decoder must refuse
        height = width = 8
    for k in rng.sample([1, 2, 4, 8], 2):
        rows, cols = -(-height // k), -(-width // k)
        if rows * cols > 4_000_000:
            rows, cols = min(rows, 64), min(cols, 64)  # a claimed giant: a corner only, the limits decide
            full = None
        else:
            full = np.empty((rows, cols, 3), np.uint8)
        t = time.perf_counter()
        try:
            if full is not None:
                decode_region(data, full, k, 0, 0, False, **kw)
                result["whole"] += 1
        except (Unsupported, ValueError):
            full = None
            result["refused"] += 1
        result["slowest"] = max(result["slowest"], time.perf_counter() - t)
        for top, left, h, w in boxes(rng, rows, cols, 3):
            out = np.empty((h, w, 3), np.uint8)
            t = time.perf_counter()
            try:
                decode_region(data, out, k, top, left, rng.random() < 0.3, **kw)
                result["boxes"] += 1
            except (Unsupported, ValueError):
                continue
            finally:
                result["slowest"] = max(result["slowest"], time.perf_counter() - t)
            if full is not None:
                want = full[top:top + h, left:left + w]
                if not np.array_equal(out, want) and not np.array_equal(out[:, ::-1], want):
                    result["diffs"].append((k, top, left, h, w))
    return result


def child() -> None:
    """Read (data, seed) pickles from stdin's file, write one JSON line per input, flushed before the next."""
    inputs = pickle.load(sys.stdin.buffer)
    crash_on = os.environ.get("FUZZ_DECODE_CRASH_ON")  # the test's proof that a crash is caught and charged
    for i, (data, seed) in enumerate(inputs):
        if crash_on and data == bytes.fromhex(crash_on):
            os.kill(os.getpid(), 11)
        print(json.dumps({"i": i, **check_one(data, seed)}), flush=True)


def run_children(inputs: list[tuple[bytes, int]], workers: int, timeout: float) -> list[dict]:
    """Each child decodes a share of the inputs; one that dies is charged to the input after its last line,
    and the rest of its share goes to a fresh child."""
    results: list[dict] = []
    pending = [inputs[i::workers] for i in range(workers)]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    while any(pending):
        procs = []
        for share in [p for p in pending if p]:
            f = tempfile.TemporaryFile()
            pickle.dump(share, f)
            f.seek(0)
            procs.append((share, subprocess.Popen([sys.executable, "-m", "bench.fuzz_decode", "--child"], stdin=f,
                                                  stdout=subprocess.PIPE, env=env)))
        pending = []
        for share, proc in procs:
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            lines = [json.loads(x) for x in out.decode().splitlines() if x.strip()]
            for line in lines:
                line["data"] = share[line["i"]][0]
            results += lines
            if proc.returncode != 0:
                bad = share[len(lines)]
                results.append({"data": bad[0], "crash": proc.returncode, "diffs": [], "slowest": 0.0})
                pending.append(share[len(lines) + 1:])
    return results


def fuzz_inputs(corpus: list[bytes], n: int, seed: int) -> list[tuple[bytes, int]]:
    rng = random.Random(seed)
    return [(mutate(rng, rng.choice(corpus)), seed * 1_000_003 + i) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--save", help="folder to write each input that crashed or differed to")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child()
    from bench import jpeg_layouts
    from bench.samples import SAMPLES

    corpus = [d for _, d in jpeg_layouts.corpus(jpeg_layouts.Writer(tempfile.gettempdir() + "/jpeg_layouts"))]
    corpus += [open(os.path.join(d, f), "rb").read() for d in [SAMPLES] if os.path.isdir(d)
               for f in sorted(os.listdir(d))[:20] if f.endswith(".JPEG")]
    summary: dict = {"inputs": 0, "crashes": [], "diffs": 0, "slowest_s": 0.0,
                     "refused_whole": 0, "region_decodes": 0}
    start, batch = time.time(), 0
    while time.time() - start < a.seconds:
        for r in run_children(fuzz_inputs(corpus, 400, a.seed + batch), a.workers, timeout=300):
            summary["inputs"] += 1
            if a.save and ("crash" in r or r["diffs"]):
                os.makedirs(a.save, exist_ok=True)
                with open(os.path.join(a.save, f"{summary['inputs']:07d}.jpg"), "wb") as f:
                    f.write(r["data"])
            if "crash" in r:
                summary["crashes"].append({"signal_or_status": r["crash"], "bytes": len(r["data"])})
                continue
            summary["diffs"] += len(r["diffs"])
            summary["slowest_s"] = max(summary["slowest_s"], round(r["slowest"], 4))
            summary["refused_whole"] += r["refused"]
            summary["region_decodes"] += r["boxes"]
        batch += 1
    summary["seconds"] = round(time.time() - start, 1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
