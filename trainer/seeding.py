"""Seeds derived from named parts, so every random choice is a pure function of (seed, where, when).

A sample's augmentation or a step's dropout mask then never depends on what ran before it, which is
what makes resuming mid-epoch exact without saving RNG streams.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, stable across processes and Python versions."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
