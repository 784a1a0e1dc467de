"""data.decode=gpu's producer (trainer/data/gpu_prefetch.py) on the CPU: batches in order, at most two ahead,
the thread gone when the consumer stops or anything fails (the error raised in the consumer's thread), and
the stream discipline: work on the loader's own stream, the consumer's stream waiting for each batch's event
before it reads, every tensor record_stream'ed on it. A fake device whose writes land only when waited for
reproduces the decode race logically; GpuBatches drives the real decoder (torchvision on the CPU).
"""

from __future__ import annotations

import random
import threading
import time

import pytest
import torch

from trainer.data import gpu_decode
from trainer.data.gpu_prefetch import Prefetcher, Streams
from trainer.data.transforms import TrainPreset

from helpers.images import cpu_decoder, levels, photo


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("gpu-decode")}


def _square(i: int) -> tuple:
    return (torch.tensor([i * i]),)


def test_batches_come_in_order_and_the_thread_ends_with_the_source():
    got = [int(t[0]) for (t,) in Prefetcher(range(50), _square, Streams())]
    assert got == [i * i for i in range(50)]
    assert not _threads()


def test_prefetch_is_bounded_to_two_batches():
    pulled: list[int] = []

    def source():
        for i in range(20):
            pulled.append(i)
            yield i

    batches = iter(Prefetcher(source(), _square, Streams(), depth=2))
    next(batches)
    time.sleep(0.3)  # let the producer run as far ahead as it may
    # one handed out, two in the queue, one decoded and waiting for room
    assert len(pulled) == 4
    batches.close()
    assert not _threads()


def test_a_consumer_that_stops_early_leaves_no_thread():
    for n, _ in enumerate(Prefetcher(range(1000), _square, Streams())):
        if n == 3:
            break
    deadline = time.monotonic() + 2
    while _threads() and time.monotonic() < deadline:  # the loop's generator is closed when it is dropped
        time.sleep(0.01)
    assert not _threads()


@pytest.mark.parametrize("where", ["source", "work"])
def test_an_error_in_the_thread_is_raised_in_the_consumer(where):
    def source():
        yield from range(3)
        if where == "source":
            raise OSError("shard imagenet-train-000003.tar vanished")
        yield 3

    def work(i: int) -> tuple:
        if where == "work" and i == 3:
            raise RuntimeError("nvJPEG: bad huffman table in sample 3")
        return _square(i)

    got = []
    with pytest.raises(OSError if where == "source" else RuntimeError,
                       match="vanished" if where == "source" else "bad huffman table in sample 3"):
        for (t,) in Prefetcher(source(), work, Streams()):
            got.append(int(t[0]))
    assert got == [0, 1, 4] and not _threads()


class LaggingDevice(Streams):
    """A device whose writes become visible on another stream only once that stream waits for their event:
    what CUDA does, where reading without the wait is the data race of pytorch/vision#9606."""

    def __init__(self) -> None:
        self.now = "consumer"  # the stream current in this thread (thread-local, as CUDA's)
        self.local = threading.local()
        self.pending: list = []  # (tensor, value) writes queued on the decode stream since the last mark
        self.kept: list = []

    def new(self):
        return "decode"

    def use(self, stream):
        device = self

        class Use:
            def __enter__(self):
                device.local.stream = stream

            def __exit__(self, *exc):
                device.local.stream = None

        return Use()

    def current(self):
        return getattr(self.local, "stream", None) or "consumer"

    def mark(self, stream):
        event, self.pending = list(self.pending), []
        return event

    def wait(self, stream, event):
        assert stream == "consumer"
        for tensor, value in event:
            tensor.fill_(value)  # the writes land only now

    def keep(self, tensor, stream):
        self.kept.append((int(tensor.data_ptr()), stream))


def test_the_consumer_waits_for_each_batchs_event_before_it_reads():
    device = LaggingDevice()

    def decode(i: int) -> tuple:
        assert device.current() == "decode"  # decoded on the loader's own stream, never the training one
        out = torch.full((4,), -1)  # garbage until the write lands
        device.pending.append((out, i))
        return (out,)

    outs = []
    for (t,) in Prefetcher(range(6), decode, device):
        assert t.tolist() == [outs.__len__()] * 4, "read before the decode stream's writes were waited for"
        outs.append(t)
    assert device.kept == [(int(t.data_ptr()), "consumer") for t in outs]


def test_without_the_wait_the_race_shows(monkeypatch):
    """The fake device is a real check: with the wait left out the consumer reads garbage."""
    device = LaggingDevice()
    monkeypatch.setattr(device, "wait", lambda stream, event: None)

    def decode(i: int) -> tuple:
        out = torch.full((4,), -1)
        device.pending.append((out, i))
        return (out,)

    assert [t.tolist() for (t,) in Prefetcher(range(3), decode, device)] == [[-1] * 4] * 3


def test_gpu_batches_decode_real_jpegs_in_order_off_the_consumers_thread():
    preset = TrainPreset(32)
    jpegs = [photo(60 + 8 * i, 80, seed=i) for i in range(12)]
    packed = []
    for b in range(3):
        chunk = range(4 * b, 4 * b + 4)
        plans = [preset.plan(jpegs[i], random.Random(i)) for i in chunk]
        packed.append(gpu_decode.pack([(jpegs[i], *p) for i, p in zip(chunk, plans)], list(chunk),
                                      [f"k{i}" for i in chunk], ["s"] * 4, preset.margin))
    decoder = cpu_decoder(32)
    threads = []

    def decode(batch):
        threads.append(threading.current_thread().name)
        return decoder(batch)

    batches = list(gpu_decode.GpuBatches(packed, decode))
    assert [y.tolist() for _, y in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    for b, (x, _) in enumerate(batches):
        for j in range(4):
            want = preset(jpegs[4 * b + j], random.Random(4 * b + j)).float()
            assert (levels(x)[j] - want).abs().mean() < 1.0
    assert set(threads) == {"gpu-decode"} and not _threads()
