"""trainer/monitoring/profiler.py on the CPU with a tiny model: the trace exists, holds exactly the window's
steps and the loop's regions, is handed to the upload hook; off, nothing is written; a bad window is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainer import config
from trainer.errors import ConfigError
from trainer.monitoring.profiler import NullProfiler, build_profiler


def run_steps(prof, steps: range) -> None:
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for s in steps:
        prof.step(s)
        with prof.region("data_wait"):
            x = torch.randn(8, 4)
        with prof.region("train_step"):
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
    prof.close()


def names(trace: Path) -> list[str]:
    return [e.get("name", "") for e in json.loads(trace.read_text())["traceEvents"]]


def test_the_trace_holds_the_steps_of_the_window(tmp_path: Path):
    uploaded: list[Path] = []
    prof = build_profiler("3-6", tmp_path, rank=0, on_trace=uploaded.append)
    run_steps(prof, range(10))
    traces = list((tmp_path / "profile").iterdir())
    assert [t.name for t in traces] == ["trace-rank0-steps3-6.json"] and uploaded == traces
    events = names(traces[0])
    assert sorted(n for n in set(events) if n.startswith("ProfilerStep#")) == [
        "ProfilerStep#3", "ProfilerStep#4", "ProfilerStep#5"]
    assert events.count("data_wait") == 3 and events.count("train_step") == 3
    assert any("addmm" in n for n in events)  # the model's ops are in it


def test_a_run_resumed_inside_the_window_records_the_rest_and_one_ending_in_it_writes_at_close(tmp_path: Path):
    run_steps(build_profiler("3-6", tmp_path, rank=1), range(4, 5))  # resumed at step 4, stopped after it
    (trace,) = (tmp_path / "profile").iterdir()
    assert trace.name == "trace-rank1-steps4-6.json"
    assert sorted(n for n in set(names(trace)) if n.startswith("ProfilerStep#")) == ["ProfilerStep#4"]


def test_a_trace_that_cannot_be_written_at_close_is_a_warning_not_an_error(tmp_path: Path, caplog):
    (tmp_path / "profile").write_text("a file where the folder should be")
    run_steps(build_profiler("3-6", tmp_path, rank=0), range(4, 5))  # close() writes: must not raise
    assert "the profiler trace of steps from 4 was not written" in caplog.text


def test_off_writes_nothing(tmp_path: Path):
    prof = build_profiler("", tmp_path, rank=0)
    assert isinstance(prof, NullProfiler)
    run_steps(prof, range(3))
    assert not (tmp_path / "profile").exists()


@pytest.mark.parametrize("text", ["110-100", "5", "a-b", "5-5", "-3-4"])
def test_a_bad_window_is_refused_naming_the_key(text: str):
    with pytest.raises(ConfigError, match=r"run\.profile_steps"):
        config.load(None, [f"run.profile_steps={text}"])
    assert config.load(None, ["run.profile_steps=100-110"]).run.profile_steps == "100-110"
