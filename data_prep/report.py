"""Console output of the CLI: the end-of-run summary and the verify report."""

from __future__ import annotations

import sys
from collections import Counter

from .prepare import Summary


def print_summary(s: Summary, out=None) -> None:
    out = out or sys.stdout
    total = sum(s.written.values())
    rate = total / s.seconds if s.seconds > 0 else 0.0
    print("data_prep summary", file=out)
    for split, n in s.written.items():
        print(f"  {split:<6} {n:>10,d} images written", file=out)
    print(f"  shards: {s.shards_written} written, {s.shards_kept} kept from an earlier run", file=out)
    if s.repaired:
        kinds = Counter(r["repair"] for r in s.repaired)
        print(f"  repaired: {len(s.repaired)} ({', '.join(f'{k}: {v}' for k, v in kinds.items())})",
              file=out)
    if s.resized:
        print(f"  resized: {s.resized}", file=out)
    if s.ignored:
        print(f"  ignored: {s.ignored} files without an image extension", file=out)
    if s.skipped:
        print(f"  skipped: {len(s.skipped)} (not classes, listed in _info.json)", file=out)
        for r in s.skipped[:50]:
            print(f"    {r.get('split', '')} {r['source']}  ({r['reason']})", file=out)
        if len(s.skipped) > 50:
            print(f"    ... {len(s.skipped) - 50} more", file=out)
    print(f"  rejected: {len(s.rejected)}", file=out)
    for r in s.rejected[:50]:
        print(f"    {r.get('split', '')} {r['key']}  {r['source']}  ({r['reason']})", file=out)
    if len(s.rejected) > 50:
        print(f"    ... {len(s.rejected) - 50} more, all listed in _info.json", file=out)
    print(f"  time: {s.seconds:.1f} s, {rate:,.0f} images/s", file=out)
    if s.info_path:
        print(f"  manifest: {s.info_path}", file=out)
    else:
        print("  other parts are unfinished: run `python -m data_prep merge OUT` after them", file=out)


def print_report(root: str, problems: list[str], samples: int, out=None) -> None:
    out = out or sys.stdout
    if not problems:
        print(f"OK: {root}: {samples:,d} samples verified", file=out)
        return
    print(f"FAILED: {root}: {len(problems)} problem(s)", file=out)
    for p in problems[:200]:
        print(f"  {p}", file=out)
    if len(problems) > 200:
        print(f"  ... {len(problems) - 200} more", file=out)
