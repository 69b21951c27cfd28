"""Load generators of the service benchmark: streams, unary calls and offered load.

Requests are serialised once up front and responses are not parsed (the methods are
called with bytes in and bytes out), so the client spends as little CPU per message as
gRPC in Python allows; it shares the machine with the server under test. Streams run
on grpc.aio (one event loop for all of them), unary calls on the blocking API: each
the cheaper and faster of the two for its pattern, measured on this machine class. Every run
lasts `duration` seconds; what arrives during the first `warmup` seconds is not counted.
Latency is measured per message, from the moment it is handed to gRPC (or, for offered
load, from its scheduled send time, so a stalled server cannot hide its backlog) to the
moment its response arrives.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import deque
from dataclasses import dataclass

import grpc
import numpy as np

from service.api import hebbian_pb2 as pb

STREAM_METHOD = "/hebbian.v1.HebbianService/StreamProcess"
UNARY_METHOD = "/hebbian.v1.HebbianService/Process"
_PAYLOADS = 16  # distinct messages cycled through


@dataclass(frozen=True)
class RunResult:
    """What one timed run measured (counted after the warm-up)."""

    messages: int
    samples: int
    seconds: float
    latencies: np.ndarray  # seconds, one per counted message
    client_cpu_seconds: float  # the whole client process, over the whole run

    @property
    def messages_per_s(self) -> float:
        """Responses per second."""
        return self.messages / self.seconds

    @property
    def samples_per_s(self) -> float:
        """Samples answered per second."""
        return self.samples / self.seconds

    def latency_ms(self, quantile: float) -> float:
        """A latency quantile in milliseconds (NaN without messages)."""
        if not len(self.latencies):
            return float("nan")
        return float(np.quantile(self.latencies, quantile)) * 1e3


def payloads(
    input_dim: int, samples_per_message: int, model: str = "", unary: bool = False
) -> list[bytes]:
    """Serialised requests of `samples_per_message` raw float32 samples each (seeded)."""
    rng = np.random.default_rng(0)
    kind = pb.ProcessRequest if unary else pb.StreamProcessRequest
    out = []
    for _ in range(_PAYLOADS):
        samples = rng.standard_normal((samples_per_message, input_dim), dtype=np.float32)
        samples /= np.float32(np.sqrt(input_dim))  # unit-norm-ish samples keep Oja stable
        tensor = pb.Tensor(shape=samples.shape, raw=samples.astype("<f4").tobytes())
        out.append(kind(model=model, samples=tensor).SerializeToString())
    return out


def prime(target: str, input_dim: int, model: str = "", timeout: float = 180.0) -> None:
    """One inference-only Process call, answered once the model is warmed up (state untouched)."""
    request = pb.ProcessRequest(
        model=model, learn=False,
        samples=pb.Tensor(shape=(1, input_dim), raw=bytes(4 * input_dim)),
    )
    with grpc.insecure_channel(target) as channel:
        channel.unary_unary(UNARY_METHOD)(request.SerializeToString(), timeout=timeout)


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


class _Window:
    """Counts what arrives inside [start + warmup, start + duration]."""

    def __init__(self, start: float, warmup: float, duration: float):
        self.begin = start + warmup
        self.end = start + duration
        self.messages = 0
        self.latencies: list[float] = []

    def record(self, sent: float, received: float) -> None:
        if self.begin <= received <= self.end:
            self.messages += 1
            self.latencies.append(received - sent)


async def _stream_once(
    channel: grpc.aio.Channel, messages: list[bytes], window: _Window, slots: int,
    rate: float | None, metadata: tuple[tuple[str, str], ...] | None = None,
) -> None:
    """One stream: send until the window ends (at most `slots` unanswered, or at `rate`)."""
    call = channel.stream_stream(STREAM_METHOD)(metadata=metadata)
    sent: deque[float] = deque()
    free = asyncio.Semaphore(slots)

    async def write() -> None:
        index = 0
        start = time.perf_counter()
        while True:
            if rate is None:
                await free.acquire()
                stamp = time.perf_counter()
            else:
                stamp = start + index / rate
                delay = stamp - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if stamp > window.end:
                break
            sent.append(stamp)
            await call.write(messages[index % len(messages)])
            index += 1
        await call.done_writing()

    writer = asyncio.create_task(write())
    try:
        async for _ in call:
            window.record(sent.popleft(), time.perf_counter())
            free.release()
        await writer
    finally:
        writer.cancel()


def stream_run(
    target: str, messages: list[bytes] | list[list[bytes]], samples_per_message: int, *,
    streams: int = 1, duration: float = 2.0, warmup: float = 0.5, window: int = 64,
    rate: float | None = None, metadata: list[tuple[tuple[str, str], ...]] | None = None,
) -> RunResult:
    """`streams` concurrent StreamProcess calls, each on its own channel, for `duration` s.

    `messages` is one list of serialised requests for every stream, or one list per stream
    (e.g. each for its own model); `metadata`, one per stream, the call's metadata (e.g.
    the `x-hebbian-model` header a router routes by). Each stream keeps at most `window`
    messages unanswered; with `rate` (messages/s per stream) it sends on a fixed schedule
    instead. The streams share one asyncio event loop (grpc.aio): for streams that costs
    the client less CPU than threads do.
    """
    per_stream = messages if isinstance(messages[0], list) else [messages] * streams
    per_call = metadata if metadata is not None else [None] * streams

    async def run() -> tuple[list[_Window], float]:
        channels = [grpc.aio.insecure_channel(target) for _ in range(streams)]
        try:
            for channel in channels:
                await asyncio.wait_for(channel.channel_ready(), 10)
            cpu = _cpu()
            start = time.perf_counter()
            windows = [_Window(start, warmup, duration) for _ in range(streams)]
            await asyncio.gather(*(
                _stream_once(channel, ours, w, window, rate, md)
                for channel, ours, w, md in zip(channels, per_stream, windows, per_call,
                                                strict=True)
            ))
            return windows, _cpu() - cpu
        finally:
            for channel in channels:
                await channel.close()

    try:
        windows, cpu = asyncio.run(run())
    except grpc.RpcError as error:
        raise RuntimeError(f"stream failed: {error}") from None
    return _result(windows, samples_per_message, duration - warmup, cpu)


def unary_run(
    target: str, messages: list[bytes], samples_per_message: int, *,
    duration: float = 2.0, warmup: float = 0.5,
) -> RunResult:
    """Process calls one after the other for `duration` s."""
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        call = channel.unary_unary(UNARY_METHOD)
        cpu = _cpu()
        start = time.perf_counter()
        w = _Window(start, warmup, duration)
        index = 0
        while True:
            sent = time.perf_counter()
            if sent > w.end:
                break
            call(messages[index % len(messages)], timeout=10)
            w.record(sent, time.perf_counter())
            index += 1
        cpu = _cpu() - cpu
    return _result([w], samples_per_message, duration - warmup, cpu)


def _result(windows: list[_Window], samples_per_message: int, seconds: float, cpu: float):
    messages = sum(w.messages for w in windows)
    latencies = np.fromiter((x for w in windows for x in w.latencies), float)
    return RunResult(messages, messages * samples_per_message, seconds, latencies, cpu)
