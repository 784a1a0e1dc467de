"""Fixed shapes on the GPU path: evaluation pads each short batch to the local batch size with IGNORE rows
(the same sums, one shape for cuDNN's autotuner and a compiled model), validation runs the uncompiled
module, and CUDA processes turn cuDNN autotuning on in one place (dist.use_fixed_shape_kernels).
"""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from trainer import dist, step
from trainer.config import ModelConfig
from trainer.model import build_model


class Shapes(torch.nn.Module):
    """tiny_cnn, noting every batch shape it is called with."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net, self.seen = build_model(ModelConfig(name="tiny_cnn"), 4), []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last)))
        return self.net(x)


def _batches(channels_last: bool):
    gen = torch.Generator().manual_seed(3)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for n in (8, 8, 5, 3):  # two workers' last batches are short
        x = torch.randn(n, 3, 32, 32, generator=gen).contiguous(memory_format=fmt)
        yield x, torch.randint(0, 4, (n,), generator=gen)


@pytest.mark.parametrize("channels_last", [False, True])
def test_padded_evaluation_sums_alike_with_one_shape(channels_last):
    plain, padded = Shapes(), Shapes()
    want = step.evaluate(plain, _batches(channels_last), lambda x: x, nullcontext)
    got = step.evaluate(padded, _batches(channels_last), lambda x: x, nullcontext, pad_to=8)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert got[3] == 24  # the padding counts nowhere
    assert {shape for shape, _ in padded.seen} == {(8, 3, 32, 32)}
    assert all(cl == channels_last for _, cl in padded.seen)  # the memory format survives the padding
    assert {shape[0] for shape, _ in plain.seen} == {8, 5, 3}


def test_cudnn_autotuning_is_turned_on(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    dist.use_fixed_shape_kernels()
    assert torch.backends.cudnn.benchmark is True
