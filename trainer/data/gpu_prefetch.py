"""Decode ahead on a stream of the loader's own, in a background thread, at most `depth` batches ahead.

The producer thread makes the decode stream current, so nvJPEG (torchcodec syncs the *current* stream
before it writes; pytorch/vision#9606, meta-pytorch/torchcodec#1634) never writes into memory that kernels
queued on the training stream still read. The consumer makes its stream wait for the batch's event before
the batch is used, and `record_stream`s each tensor on its stream, so the allocator does not hand the memory
back to the decode stream while training kernels still read it. `Streams` hides the CUDA calls: its CPU
stand-in runs every other line of this module on a CPU, which is how the tests drive it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import torch

In = TypeVar("In")
Out = TypeVar("Out")


class Streams:
    """The CPU stand-in: one implicit stream, so every call is a no-op. CudaStreams does the real work."""

    def new(self) -> Any:
        return None

    def use(self, stream: Any) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def current(self) -> Any:
        return None

    def mark(self, stream: Any) -> Any:
        """An event after the work queued on `stream` so far (this batch's decode)."""
        return None

    def wait(self, stream: Any, event: Any) -> None:
        """Make `stream` wait for `event` (a wait queued on the device; the host does not block)."""

    def keep(self, tensor: torch.Tensor, stream: Any) -> None:
        """Tell the allocator that `tensor` is used on `stream` too (record_stream)."""


class CudaStreams(Streams):
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def new(self) -> torch.cuda.Stream:
        return torch.cuda.Stream(self.device)

    def use(self, stream: Any) -> contextlib.AbstractContextManager:
        return torch.cuda.stream(stream)

    def current(self) -> torch.cuda.Stream:
        return torch.cuda.current_stream(self.device)

    def mark(self, stream: Any) -> torch.cuda.Event:
        event = torch.cuda.Event()
        event.record(stream)
        return event

    def wait(self, stream: Any, event: Any) -> None:
        # the event of this batch, not stream.wait_stream(decode): that would also wait for the decode
        # of the batch after it, already queued behind
        stream.wait_event(event)

    def keep(self, tensor: torch.Tensor, stream: Any) -> None:
        tensor.record_stream(stream)


_END = object()


class Prefetcher(Generic[In, Out]):
    """Iterate `work(item)` for each item of `source`, computed in a background thread on a stream of its
    own, at most `depth` results ahead of the consumer, in order. Results are tuples; their tensors are
    made safe to use on the consumer's current stream before they are handed out.

    Errors in the thread (the DataLoader's or the decoder's) are raised in the consumer's thread as the
    same exception. The thread ends when the source does, on an error, or when the consumer stops
    (`close()`, or the generator being closed, e.g. a `for` loop left with `break`)."""

    def __init__(self, source: Iterable[In], work: Callable[[In], tuple], streams: Streams, depth: int = 2,
                 name: str = "gpu-decode") -> None:
        self.source, self.work, self.streams, self.depth, self.name = source, work, streams, depth, name

    def __iter__(self) -> Iterator[tuple]:
        ready: queue.Queue = queue.Queue(maxsize=self.depth)
        stop = threading.Event()
        stream = self.streams.new()
        thread = threading.Thread(target=self._produce, args=(ready, stop, stream), name=self.name, daemon=True)
        thread.start()
        try:
            while True:
                item, event, error = ready.get()
                if error is not None:
                    raise error
                if item is _END:
                    return
                consumer = self.streams.current()
                self.streams.wait(consumer, event)
                for t in item:
                    if isinstance(t, torch.Tensor):
                        self.streams.keep(t, consumer)
                yield item
        finally:
            stop.set()
            with contextlib.suppress(queue.Empty):  # unblock a producer waiting to put
                while True:
                    ready.get_nowait()
            thread.join()

    def _produce(self, ready: queue.Queue, stop: threading.Event, stream: Any) -> None:
        def put(entry: tuple) -> bool:
            while not stop.is_set():
                try:
                    ready.put(entry, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            with self.streams.use(stream):
                for raw in self.source:
                    if stop.is_set():
                        return
                    out = self.work(raw)
                    if not put((out, self.streams.mark(stream), None)):
                        return
            put((_END, None, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, who raises it
            put((None, None, e))
        finally:
            close = getattr(self.source, "close", None)  # a generator source: its cleanup runs in this thread
            if callable(close):
                close()
