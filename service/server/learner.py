"""One learner thread per model: the only writer of the model's variables.

Request threads `submit` samples and wait on the returned future. The learner thread
takes everything waiting (up to `max_batch` samples, whole requests only, in arrival
order) as one micro-batch, commits it to the journal, applies it with one
`engine.process` call (per-sample learn flags), then resolves each request's future
with its slice of the activations. Resets run on the same thread, between batches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
import numpy as np

from service.model import HebbianStack, StackConfig
from service.model.quality import LayerStatsValues, QualityTracker
from service.server.errors import ServiceError
from service.server.metrics import ModelMetrics
from service.server.work_queue import QueueClosedError, QueueFullError, WorkItem, WorkQueue
from service.state import Journal
from service.state.records import RequestSpan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """The answer to one submitted request."""

    activations: np.ndarray  # (n, output_dim) float32, row i before sample i's update
    skipped: np.ndarray  # int32 indices of learning samples refused as non-finite
    step: int  # the model's step right after this request's samples


@dataclass(frozen=True)
class ModelStatus:
    """A consistent view of a model for GetModel/ListModels."""

    name: str
    config: StackConfig  # every layer setting spelled out, seeds included
    step: int
    samples_inferred: int
    samples_skipped: int
    layer_stats: list[LayerStatsValues]
    create_time: float  # seconds since the epoch
    is_default: bool


class _Counters(NamedTuple):
    step: int
    inferred: int
    skipped: int


class _Request(NamedTuple):
    samples: np.ndarray
    learn: bool
    request_id: str
    future: Future


class Learner:
    """Owns one model (a `HebbianStack`) and applies every change to it on its own thread.

    Args:
      name: the model's name.
      stack: the built model; nothing else may touch it once `start` is called.
      journal: commit hook called before each micro-batch or reset is applied.
      metrics: the model's metrics.
      max_batch: most samples per micro-batch (whole requests; a larger one runs alone).
      max_queued_samples: samples waiting before `submit` blocks (back-pressure).
      is_default: whether this is the server's default model.
      warm_up: compile every engine bucket on the thread before the first batch.
    """

    def __init__(
        self,
        name: str,
        stack: HebbianStack,
        *,
        journal: Journal,
        metrics: ModelMetrics,
        max_batch: int,
        max_queued_samples: int,
        is_default: bool = False,
        warm_up: bool = True,
    ):
        self.name = name
        self.stack = stack
        self.is_default = is_default
        self.create_time = time.time()
        self.input_dim = int(stack.config.input_dim)
        self.output_dim = stack.config.output_dim
        self.ready = threading.Event()  # set once warmed up and draining
        self._journal = journal
        self._metrics = metrics
        self._max_batch = max_batch
        self._warm_up = warm_up
        self._queue = WorkQueue(max_queued_samples)
        self._quality = QualityTracker(stack)
        self._counters = _Counters(stack.engine.step, 0, 0)
        self._thread = threading.Thread(target=self._run, name=f"learner-{name}", daemon=True)
        metrics.set_step(self._counters.step)
        metrics.set_stats_source(self._quality.layer_stats)

    # -- request side (any thread) -------------------------------------------------------

    def start(self) -> None:
        """Start the learner thread (it warms up first, then drains the queue)."""
        self._thread.start()

    def submit(
        self, samples: np.ndarray, learn: bool, timeout: float | None = None, request_id: str = ""
    ) -> Future[Outcome]:
        """Queue validated samples (n, input_dim) float32; the future resolves once applied.

        `request_id` (optional) is handed to the journal with the request's span.

        Raises:
          ServiceError: NOT_FOUND if the model is being deleted, DEADLINE_EXCEEDED if the
            queue stayed full for `timeout` seconds.
        """
        future: Future[Outcome] = Future()
        request = _Request(samples, bool(learn), request_id, future)
        self._put(WorkItem(request, len(samples)), timeout)
        return future

    def reset(self, seed: int | None = None) -> Future[ModelStatus]:
        """Re-initialise the weights (after the requests queued before it); step goes to 0."""
        future: Future[ModelStatus] = Future()
        self._put(WorkItem((self._reset, seed, future), 0, control=True), None)
        return future

    def reject(self, reason: str, samples: int) -> None:
        """Count a request refused before it reached the queue (for the metrics)."""
        self._metrics.reject(reason, samples)

    def status(self) -> ModelStatus:
        """The model's name, config, counters and live layer statistics."""
        counters = self._counters
        return ModelStatus(
            name=self.name,
            config=self.resolved_config(),
            step=counters.step,
            samples_inferred=counters.inferred,
            samples_skipped=counters.skipped,
            layer_stats=self._quality.layer_stats(),
            create_time=self.create_time,
            is_default=self.is_default,
        )

    def resolved_config(self) -> StackConfig:
        """The model's config with every layer setting spelled out, seeds included."""
        layers = [{**layer.params.to_dict(), "seed": layer.seed} for layer in self.stack.layers]
        return StackConfig(self.input_dim, tuple(layers))

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new work, finish what is queued, and end the thread."""
        self._queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _put(self, item: WorkItem, timeout: float | None) -> None:
        try:
            self._queue.put(item, timeout)
        except QueueClosedError:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND, f"model {self.name!r} is being deleted"
            ) from None
        except QueueFullError as err:
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"model {self.name!r} is overloaded ({err}); the deadline passed while waiting",
            ) from None
        self._metrics.set_queue_depth(self._queue.depth)

    # -- learner thread --------------------------------------------------------------------

    def _run(self) -> None:
        if self._warm_up:
            try:
                self._compile_buckets()
            except Exception:  # buckets then compile on first use
                log.exception("model %r: warm-up failed", self.name)
        self.ready.set()
        while batch := self._queue.take(self._max_batch):
            if batch[0].control:
                fn, arg, future = batch[0].payload
                _settle(future, fn, arg)
                continue
            requests = [item.payload for item in batch]
            try:
                self._apply(requests)
            except Exception as err:  # never leave a caller waiting
                log.exception("model %r: batch failed", self.name)
                _fail(requests, ServiceError(grpc.StatusCode.INTERNAL, f"batch failed: {err}"))

    def _compile_buckets(self) -> None:
        """Warm-up: compile every engine bucket with an inference-only pass (no state change),
        one bucket at a time so that deleting a model does not wait for all of them."""
        started = time.perf_counter()
        engine = self.stack.engine
        for size in engine.buckets:
            if self._queue.closed:
                return
            engine.process(np.zeros((size, self.input_dim), np.float32), learn=False)
        log.info("model %r warmed up in %.1fs", self.name, time.perf_counter() - started)

    def _apply(self, requests: list[_Request]) -> None:
        sizes = np.fromiter((len(r.samples) for r in requests), np.int64, len(requests))
        if len(requests) == 1:
            samples = requests[0].samples
            flags = np.full(len(samples), requests[0].learn)
        else:
            samples = np.concatenate([r.samples for r in requests])
            flags = np.repeat(np.fromiter((r.learn for r in requests), bool, len(requests)), sizes)
        try:
            self._journal.commit(self.name, samples, flags, _spans(requests, sizes))
        except Exception as err:
            log.exception("model %r: journal commit failed", self.name)
            _fail(requests, ServiceError(grpc.StatusCode.UNAVAILABLE, f"not committed: {err}"))
            return
        started = time.perf_counter()
        try:
            result = self.stack.engine.process(samples, flags)
        except Exception as err:
            log.exception("model %r: engine failed", self.name)
            _fail(requests, ServiceError(grpc.StatusCode.INTERNAL, f"engine failed: {err}"))
            return
        seconds = time.perf_counter() - started
        self._quality.observe(samples)
        self._account(requests, sizes, flags, result, seconds)

    def _account(self, requests, sizes, flags, result, seconds) -> None:
        before = self._counters
        applied = flags & ~result.skipped
        steps = before.step + np.cumsum(applied)[np.cumsum(sizes) - 1]
        learned, skipped = int(applied.sum()), int(result.skipped.sum())
        inferred = len(flags) - int(flags.sum())
        self._counters = _Counters(
            result.step, before.inferred + inferred, before.skipped + skipped
        )
        self._metrics.observe_batch(len(flags), learned, inferred, skipped, seconds)
        self._metrics.set_step(result.step)
        self._metrics.set_queue_depth(self._queue.depth)
        start = 0
        refused = np.zeros(0, np.int32)
        for request, size, step in zip(requests, sizes.tolist(), steps.tolist(), strict=True):
            stop = start + size
            if skipped:
                refused = np.flatnonzero(result.skipped[start:stop]).astype(np.int32)
            request.future.set_result(Outcome(result.activations[start:stop], refused, step))
            start = stop

    def _reset(self, seed: int | None) -> ModelStatus:
        self._journal.record_reset(self.name, seed)
        self.stack.reset(seed)
        self._quality.reset()
        self._counters = _Counters(self.stack.engine.step, 0, 0)
        self._metrics.set_step(self._counters.step)
        return self.status()


def _spans(requests: list[_Request], sizes: np.ndarray) -> tuple[RequestSpan, ...]:
    """Where each request that has an id sits in the batch."""
    starts = np.cumsum(sizes) - sizes
    return tuple(
        RequestSpan(r.request_id, start, size)
        for r, start, size in zip(requests, starts.tolist(), sizes.tolist(), strict=True)
        if r.request_id
    )


def _settle(future: Future, fn: Callable[[Any], Any], arg: Any) -> None:
    try:
        future.set_result(fn(arg))
    except Exception as err:
        future.set_exception(err)


def _fail(requests: list[_Request], error: Exception) -> None:
    for request in requests:
        if not request.future.done():
            request.future.set_exception(error)
