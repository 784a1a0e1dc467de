"""Seeded fuzzing of the region decoder in the suite (bench/fuzz_decode.py, the same mutator): mutations of
JPEGs of every layout, decoded in child processes; no crash (a signal exit), no decode past a time bound,
and region == whole wherever both succeed. A crash is caught and charged to the input that caused it.
"""

from __future__ import annotations

import pytest

from bench import fuzz_decode, jpeg_layouts

INPUTS = 400
TIME_BOUND_S = 2.0  # the slowest decode of a mutated file of at most 130x97 pixels, or a claimed giant


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    writer = jpeg_layouts.Writer(tmp_path_factory.getbasetemp() / "jpeg_layouts")
    return [d for _, d in jpeg_layouts.corpus(writer, sizes=[(7, 9), (17, 33), (61, 83)])]


def test_mutated_layouts_decode_without_crash_or_stall_and_regions_equal_whole(corpus):
    results = fuzz_decode.run_children(fuzz_decode.fuzz_inputs(corpus, INPUTS, seed=21), workers=2, timeout=120)
    assert len(results) == INPUTS
    assert [r for r in results if "crash" in r] == []
    assert [r["diffs"] for r in results if r["diffs"]] == []
    assert max(r["slowest"] for r in results) < TIME_BOUND_S
    # the mutations reach both outcomes: decodes to compare, and refusals
    assert sum(r["whole"] for r in results) > INPUTS // 4 and sum(r["refused"] for r in results) > INPUTS // 4


def test_a_crash_is_caught_as_a_signal_and_charged_to_its_input(corpus, monkeypatch):
    inputs = fuzz_decode.fuzz_inputs(corpus, 12, seed=5)
    monkeypatch.setenv("FUZZ_DECODE_CRASH_ON", inputs[4][0].hex())  # the child kills itself with SIGSEGV there
    results = fuzz_decode.run_children(inputs, workers=2, timeout=60)
    crashed = [r for r in results if "crash" in r]
    assert [(r["crash"], r["data"]) for r in crashed] == [(-11, inputs[4][0])]
    assert len(results) == 12  # the rest of that child's share still decoded, in a fresh child
