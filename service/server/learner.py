"""One learner thread per model: the only writer of the model's state.

Request threads `submit` samples and wait on the returned future. The learner thread
takes everything waiting (up to `max_batch` samples, whole requests only, in arrival
order; when it is behind, after lingering up to `batch_linger` while more keeps arriving)
as one micro-batch and, in this order:

1. answers requests whose `request_id` it already acknowledged (exactly-once: the
   original answer, nothing applied twice);
2. logs the batch to the model's write-ahead log (one write, one fsync: group commit);
3. applies it with one `engine.process` call (per-sample learn flags);
4. resolves each request with its own rows and step: acknowledged = logged + applied;
5. takes a snapshot when the schedule says so.

Resets, restores, snapshots, hyper-parameter updates and state reads run on the same
thread, between batches. At start-up
the learner is the target of recovery (newest snapshot + log replay, through the same
code that applied the batches live, so the weights come back bit for bit).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
import numpy as np

from service.model import HebbianStack, StackConfig
from service.model.engine import EngineResult
from service.model.layer_state import HebbianState
from service.model.quality import LayerStatsValues, QualityTracker
from service.model.updates import LayerChanges
from service.server.bounds import quote
from service.server.errors import ServiceError, invalid
from service.server.metrics import ModelMetrics
from service.server.refusals import RefusalTracker
from service.server.work_queue import QueueClosedError, QueueFullError, WorkItem, WorkQueue
from service.state.dedup import Ack, RequestWindow
from service.state.records import BatchRecord, RequestSpan
from service.state.snapshot import CorruptSnapshotError, SnapshotInfo
from service.state.store import ModelStore, RecoveryReport
from service.state.wal import DurabilityError

log = logging.getLogger(__name__)

SNAPSHOT_RETRY_S = 10.0  # seconds between scheduled snapshot attempts after one failed


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
    last_snapshot: SnapshotInfo | None = None
    recent_skipped_fraction: float = 0.0  # refused share of the recent learning samples
    refusing_updates: bool = False  # most recent updates refused (`refusals`)


@dataclass(frozen=True)
class ModelState:
    """A model's full learning state, read between batches (GetModelState)."""

    name: str
    config: StackConfig  # every layer setting spelled out, seeds included
    step: int
    layers: tuple[HebbianState, ...]


@dataclass(frozen=True)
class SnapshotSchedule:
    """When a learner persists a snapshot on its own (besides the Snapshot RPC and stop)."""

    every_samples: int = 100_000
    every_seconds: float = 300.0


class _Counters(NamedTuple):
    step: int
    inferred: int
    skipped: int


class _Request(NamedTuple):
    samples: np.ndarray
    learn: bool
    request_id: str
    future: Future
    deadline: float | None = None  # time.monotonic() after which it must not be applied


class Learner:
    """Owns one model (a `HebbianStack`) and applies every change to it on its own thread.

    Args:
      name: the model's name.
      stack: the built model; nothing else may touch it once `start` is called.
      store: the model's durable store, or None for a model kept in memory only.
      metrics: the model's metrics.
      max_batch: most samples per micro-batch (whole requests; a larger one runs alone).
      max_queued_samples: samples waiting before `submit` blocks (back-pressure).
      batch_linger: most seconds to wait for more samples when the learner is behind
        (`WorkQueue.take`): a busy model gets fewer, larger engine calls; 0 disables it.
      linger_slice: lingering stops after this many seconds without a new request.
      is_default: whether this is the server's default model.
      warm_up: compile every engine bucket on the thread before the first batch.
      schedule: when to take snapshots on its own.
      window: acknowledged request ids kept for exactly-once delivery.
    """

    def __init__(
        self,
        name: str,
        stack: HebbianStack,
        *,
        store: ModelStore | None,
        metrics: ModelMetrics,
        max_batch: int,
        max_queued_samples: int,
        batch_linger: float = 0.0,
        linger_slice: float = 0.001,
        is_default: bool = False,
        warm_up: bool = True,
        schedule: SnapshotSchedule | None = None,
        window: RequestWindow | None = None,
    ):
        self.name = name
        self.stack = stack
        self.store = store
        self.is_default = is_default
        self.create_time = time.time()
        self.input_dim = int(stack.config.input_dim)
        self.output_dim = stack.config.output_dim
        self.ready = threading.Event()  # set once warmed up and draining
        self._metrics = metrics
        self._max_batch = max_batch
        self._batch_linger = batch_linger
        self._linger_slice = linger_slice
        self._warm_up = warm_up
        self._schedule = schedule or SnapshotSchedule()
        self._window = window or RequestWindow()
        self._queue = WorkQueue(max_queued_samples)
        self._quality = QualityTracker(stack)
        self._counters = _Counters(stack.engine.step, 0, 0)
        self._refusals = RefusalTracker()
        self._created_hyper = stack.hyper_parameters()  # of snapshots that carry none
        self._unsnapshotted = 0  # samples applied since the last snapshot
        self._snapshot_time = time.monotonic()
        self._snapshot_retry_at = 0.0  # time.monotonic() before which no scheduled attempt
        self._final_snapshot = True
        self._thread = threading.Thread(target=self._run, name=f"learner-{name}", daemon=True)
        metrics.set_step(self._counters.step)
        metrics.set_stats_source(self._quality.layer_stats)

    # -- request side (any thread) -------------------------------------------------------

    def recover(self) -> RecoveryReport | None:
        """Rebuild the state from the store (call once, before `start`)."""
        if self.store is None:
            return None
        report = self.store.recover(self)
        self._metrics.set_step(self._counters.step)
        self._snapshot_time = time.monotonic()
        return report

    def start(self) -> None:
        """Start the learner thread (it warms up first, then drains the queue)."""
        self._thread.start()

    def submit(
        self, samples: np.ndarray, learn: bool, timeout: float | None = None, request_id: str = ""
    ) -> Future[Outcome]:
        """Queue validated samples (n, input_dim) float32; the future resolves once applied.

        A `request_id` the model acknowledged recently gets that answer again instead.
        `timeout` is the caller's time left: a request still queued when it has passed
        is not applied (DEADLINE_EXCEEDED), nor is one whose future was cancelled.

        Raises:
          ServiceError: NOT_FOUND if the model is being deleted, DEADLINE_EXCEEDED if the
            queue stayed full for `timeout` seconds.
        """
        future: Future[Outcome] = Future()
        deadline = None if timeout is None else time.monotonic() + timeout
        request = _Request(samples, bool(learn), request_id, future, deadline)
        self._put(WorkItem(request, len(samples)), timeout)
        return future

    def reset(self, seed: int | None = None) -> Future[ModelStatus]:
        """Re-initialise the weights (after the requests queued before it); step goes to 0."""
        return self._control(self._reset, seed)

    def snapshot(self) -> Future[tuple[SnapshotInfo, dict[str, np.ndarray]]]:
        """Persist the state now (after the requests queued before it)."""
        return self._control(lambda _: self._take_snapshot(), None)

    def restore(self, snapshot_id: str) -> Future[ModelStatus]:
        """Go back to the state of snapshot `snapshot_id` (after the queued requests)."""
        return self._control(self._restore, snapshot_id)

    def model_state(self) -> Future[ModelState]:
        """Read the full state (after the queued requests); writes nothing."""
        return self._control(lambda _: ModelState(
            self.name, self.resolved_config(), self._counters.step, self.stack.layer_states()
        ), None)

    def update(self, changes: LayerChanges) -> Future[ModelStatus]:
        """Change hyper-parameters (one dict per layer, `service.model.updates`), keeping
        the learned state; logged, applied after the requests queued before it."""
        return self._control(self._update, changes)

    def snapshot_contents(self) -> tuple[int, dict[str, np.ndarray], dict]:
        """(step, arrays, header) of a snapshot of the state now (what `Snapshot` writes).
        Learner thread, or before `start`."""
        ids, window = self._window.to_arrays()
        header = {
            "counters": {"step": self._counters.step, "inferred": self._counters.inferred,
                         "skipped": self._counters.skipped},
            "window_ids": ids,
            "create_time": self.create_time,
            "seeds": list(self.stack.seeds),  # what reset() starts from
            "hyper_parameters": list(self.stack.hyper_parameters()),  # after updates
        }
        return self._counters.step, {**self.stack.state_arrays(), **window}, header

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
            last_snapshot=self.store.last_snapshot if self.store else None,
            recent_skipped_fraction=self._refusals.fraction,
            refusing_updates=self._refusals.refusing,
        )

    def resolved_config(self) -> StackConfig:
        """The model's config with every layer setting spelled out, seeds included."""
        return self.stack.resolved_config()

    def stop(self, timeout: float | None = None, *, final_snapshot: bool = True) -> None:
        """Refuse new work, finish what is queued, snapshot (unless deleting), end the thread."""
        self._final_snapshot = final_snapshot
        self._queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        elif self.store is not None:
            self.store.close()

    def _control(self, fn: Callable[[Any], Any], arg: Any) -> Future:
        future: Future = Future()
        self._put(WorkItem((fn, arg, future), 0, control=True), None)
        return future

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
        while (batch := self._queue.take(
            self._max_batch, self._time_to_snapshot(),
            linger=self._batch_linger, linger_slice=self._linger_slice,
        )) != []:
            if batch is None:  # idle until a time-based snapshot was due
                self._snapshot_if_due()
                continue
            if batch[0].control:
                fn, arg, future = batch[0].payload
                _settle(future, fn, arg)
                continue
            requests = self._still_wanted([item.payload for item in batch])
            if not requests:
                continue
            try:
                self._apply(requests)
            except Exception as err:  # never leave a caller waiting
                log.exception("model %r: batch failed", self.name)
                _fail(requests, ServiceError(grpc.StatusCode.INTERNAL, f"batch failed: {err}"))
            self._snapshot_if_due()
        self._shut_down()

    def _shut_down(self) -> None:
        if self.store is None:
            return
        try:
            if self._final_snapshot and (self._unsnapshotted or self.store.last_snapshot is None
                                         or self.store.last_snapshot.seq < self.store.last_seq):
                info, _ = self._take_snapshot()
                log.info("model %r: final snapshot %s at step %d", self.name, info.snapshot_id,
                         info.step)
        except Exception:
            log.exception("model %r: final snapshot failed; the log still holds everything",
                          self.name)
        finally:
            self.store.close()

    def _still_wanted(self, requests: list[_Request]) -> list[_Request]:
        """Drop, before anything is logged or applied, requests whose caller gave up:
        a cancelled future (the call ended) or a passed deadline (DEADLINE_EXCEEDED)."""
        now, wanted, dropped = time.monotonic(), [], 0
        for request in requests:
            if not request.future.set_running_or_notify_cancel():
                dropped += len(request.samples)
            elif request.deadline is not None and now >= request.deadline:
                request.future.set_exception(ServiceError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "the deadline passed while the samples were queued; nothing was applied",
                ))
                dropped += len(request.samples)
            else:
                wanted.append(request)
        if dropped:
            self._metrics.reject("abandoned", dropped)
        return wanted

    def _compile_buckets(self) -> None:
        """Warm-up: compile (or load) everything the engine runs (no state change)."""
        started = time.perf_counter()
        self.stack.engine.warm_up()
        log.info("model %r warmed up in %.2fs", self.name, time.perf_counter() - started)

    def _apply(self, requests: list[_Request], log_batch: bool = True) -> None:
        requests = self._answer_repeats(requests)
        if not requests:
            return
        sizes = np.fromiter((len(r.samples) for r in requests), np.int64, len(requests))
        if len(requests) == 1:
            samples = requests[0].samples
            flags = np.full(len(samples), requests[0].learn)
        else:
            samples = np.concatenate([r.samples for r in requests])
            flags = np.repeat(np.fromiter((r.learn for r in requests), bool, len(requests)), sizes)
        spans = _spans(requests, sizes)
        if self.store is not None and log_batch:
            try:
                self.store.append_batch(samples, flags, spans)
            except DurabilityError as err:
                self._refuse_unlogged(requests, err)
                return
        started = time.perf_counter()
        result = self.stack.engine.process(samples, flags)
        seconds = time.perf_counter() - started
        outcomes = self._account(sizes, flags, result)
        self._remember(spans, outcomes)
        learned, skipped = int((flags & ~result.skipped).sum()), int(result.skipped.sum())
        inferred = len(flags) - int(flags.sum())
        self._metrics.observe_batch(len(flags), learned, inferred, skipped, seconds)
        self._metrics.set_step(result.step)
        self._metrics.set_queue_depth(self._queue.depth)
        for request, outcome in zip(requests, outcomes, strict=True):
            request.future.set_result(outcome)
        self._quality.observe(samples)

    def _refuse_unlogged(self, requests: list[_Request], err: DurabilityError) -> None:
        """The batch could not be logged (e.g. the disk is full): refuse every request that
        needs a log record (UNAVAILABLE, nothing applied); answer the inference-only ones
        without an id, which need none, from the weights as they are."""
        refused = [r for r in requests if _needs_record(r)]
        _fail(refused, ServiceError(grpc.StatusCode.UNAVAILABLE, f"not logged: {err}"))
        readers = [r for r in requests if not _needs_record(r)]
        if readers:
            self._apply(readers, log_batch=False)

    def _answer_repeats(self, requests: list[_Request]) -> list[_Request]:
        """Answer requests whose id was already acknowledged; return the rest. A repeat of
        an id that is in this same batch waits for the first one's answer."""
        fresh, first_of = [], {}
        for request in requests:
            rid = request.request_id
            ack = self._window.get(rid)
            if ack is not None:
                request.future.set_result(Outcome(ack.activations, ack.skipped, ack.step))
            elif rid and rid in first_of:
                first_of[rid].future.add_done_callback(
                    lambda done, repeat=request: _copy_result(done, repeat.future)
                )
            else:
                if rid:
                    first_of[rid] = request
                fresh.append(request)
        return fresh

    def _account(self, sizes: np.ndarray, flags: np.ndarray, result: EngineResult):
        """Advance the counters by one applied batch; the per-request outcomes."""
        before = self._counters
        applied = flags & ~result.skipped
        ends = np.cumsum(sizes)
        steps = before.step + np.cumsum(applied)[ends - 1]
        skipped = int(result.skipped.sum())
        inferred = len(flags) - int(flags.sum())
        self._counters = _Counters(
            result.step, before.inferred + inferred, before.skipped + skipped
        )
        self._watch_refusals(int(flags.sum()), skipped)
        self._unsnapshotted += len(flags)
        outcomes, start = [], 0
        none = np.zeros(0, np.int32)
        for stop, step in zip(ends.tolist(), steps.tolist(), strict=True):
            refused = (np.flatnonzero(result.skipped[start:stop]).astype(np.int32)
                       if skipped else none)
            outcomes.append(Outcome(result.activations[start:stop], refused, step))
            start = stop
        return outcomes

    def _watch_refusals(self, learning: int, refused: int) -> None:
        """Track the refused share of recent learning samples; log when the model starts
        (one WARNING) or stops refusing most of its updates."""
        change = self._refusals.observe(learning, refused)
        self._metrics.set_skipped_fraction(self._refusals.fraction)
        if change.changed and change.refusing:
            log.warning(
                "model %r refuses most updates: %.0f%% of its recent learning samples would "
                "have made a weight non-finite and were not applied (it has diverged; lower "
                "the learning rate with UpdateModel, then Reset or Restore)",
                self.name, 100 * self._refusals.fraction,
            )
        elif change.changed:
            log.info("model %r accepts most updates again", self.name)

    def _clear_refusals(self) -> None:
        """The weights were replaced (Reset, Restore, recovery): no refusals yet."""
        self._refusals.clear()
        self._metrics.set_skipped_fraction(0.0)

    def _remember(self, spans: tuple[RequestSpan, ...], outcomes: list[Outcome]) -> None:
        """Keep the answers of requests that have an id, for exactly-once delivery."""
        for span, outcome in zip(spans, outcomes, strict=True):
            if span.request_id:
                self._window.add(
                    span.request_id, Ack(outcome.activations, outcome.skipped, outcome.step)
                )

    def _reset(self, seed: int | None) -> ModelStatus:
        if self.store is not None:
            with _refused_unless_logged("Reset"):
                self.store.append_reset(seed)
        self._apply_reset(seed)
        return self.status()

    def _apply_reset(self, seed: int | None) -> None:
        self.stack.reset(seed)
        self._quality.reset()
        self._window.clear()
        self._clear_refusals()
        self._counters = _Counters(self.stack.engine.step, 0, 0)
        self._unsnapshotted += 1
        self._metrics.set_step(self._counters.step)

    def _restore(self, snapshot_id: str) -> ModelStatus:
        store = self._require_store("Restore")
        try:
            header, arrays = store.read_snapshot(snapshot_id)
        except KeyError:
            known = ", ".join(s.snapshot_id for s in store.list_snapshots()) or "none"
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                f"model {self.name!r} has no snapshot {quote(snapshot_id)}; snapshots: {known}",
            ) from None
        except CorruptSnapshotError as err:
            raise ServiceError(
                grpc.StatusCode.DATA_LOSS,
                f"model {self.name!r}: snapshot {snapshot_id} cannot be restored, nothing "
                f"changed: {err}",
            ) from None
        with _refused_unless_logged("Restore"):
            store.append_restore(snapshot_id)
        self.load_snapshot(header, arrays)
        self._unsnapshotted += 1
        self._metrics.set_step(self._counters.step)
        return self.status()

    def _update(self, changes: LayerChanges) -> ModelStatus:
        try:
            self.stack.check_update(changes)
        except ValueError as err:
            raise invalid(f"model {self.name!r}: {err}; nothing changed", "bad_update") from None
        if self.store is not None:
            with _refused_unless_logged("UpdateModel"):
                self.store.append_update(changes)
        self.stack.update(changes)
        self._unsnapshotted += 1
        return self.status()

    def _require_store(self, what: str) -> ModelStore:
        if self.store is None:
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{what} needs a data directory; this server keeps models in memory only "
                "(start it with --data-dir)",
            )
        return self.store

    # -- snapshots ---------------------------------------------------------------------------

    def _time_to_snapshot(self) -> float | None:
        """Seconds the learner may idle before a time-based snapshot is due (None: never)."""
        if self.store is None or not self._unsnapshotted:
            return None
        now = time.monotonic()
        elapsed = now - self._snapshot_time
        return max(0.0, self._schedule.every_seconds - elapsed, self._snapshot_retry_at - now)

    def _snapshot_if_due(self) -> None:
        if self.store is None or not self._unsnapshotted:
            return
        if time.monotonic() < self._snapshot_retry_at:  # the last attempt failed
            return
        due = self._unsnapshotted >= self._schedule.every_samples or (
            time.monotonic() - self._snapshot_time >= self._schedule.every_seconds
        )
        if due:
            try:
                self._take_snapshot()
            except Exception:  # the log still has everything; try again a little later
                log.exception("model %r: snapshot failed; next attempt in %.0f s", self.name,
                              SNAPSHOT_RETRY_S)
                self._snapshot_retry_at = time.monotonic() + SNAPSHOT_RETRY_S

    def _take_snapshot(self) -> tuple[SnapshotInfo, dict[str, np.ndarray]]:
        store = self._require_store("Snapshot")
        step, arrays, header = self.snapshot_contents()
        try:
            info = store.write_snapshot(step, arrays, header)
        except OSError as err:  # e.g. a full disk: the log still holds everything
            raise ServiceError(grpc.StatusCode.UNAVAILABLE,
                               f"snapshot not written ({err.strerror or err}); the log still "
                               "holds every acknowledged change") from err
        self._unsnapshotted = 0
        self._snapshot_time = time.monotonic()
        return info, {key: value for key, value in arrays.items()
                      if not key.startswith("window.")}

    # -- recovery target (`service.state.store.RecoveryTarget`) ------------------------------

    def load_snapshot(self, header: dict, arrays: dict[str, np.ndarray]) -> None:
        """Replace the whole state with a snapshot's: weights, counters, request window."""
        self.stack.load_state_arrays(arrays)
        if "seeds" in header:  # older snapshots keep the seeds of config.json
            self.stack.set_seeds(header["seeds"])
        # older snapshots were all taken with the hyper-parameters of config.json
        hyper = tuple(header.get("hyper_parameters") or self._created_hyper)
        if hyper != self.stack.hyper_parameters():
            self.stack.update(hyper)
        self._clear_refusals()
        counters = header["counters"]
        self._counters = _Counters(counters["step"], counters["inferred"], counters["skipped"])
        self._window.load_arrays(header["window_ids"], arrays)
        self._quality.reset()

    def replay_batch(self, record: BatchRecord) -> None:
        """Apply a logged micro-batch exactly as it was applied live."""
        spans = record.requests or (RequestSpan("", 0, len(record.samples)),)
        sizes = np.array([span.count for span in spans], np.int64)
        result = self.stack.engine.process(record.samples, record.learn)
        self._remember(spans, self._account(sizes, record.learn, result))

    def replay_reset(self, seed: int | None) -> None:
        """Apply a logged reset."""
        self._apply_reset(seed)

    def replay_update(self, layers: LayerChanges) -> None:
        """Apply a logged hyper-parameter update."""
        self.stack.update(layers)


def _needs_record(request: _Request) -> bool:
    """Whether applying `request` changes durable state: it learns, or its id joins the
    exactly-once window. An inference-only request without an id can be answered when
    its batch cannot be logged (only its count in `samples_inferred` is then not durable)."""
    return request.learn or bool(request.request_id)


def _spans(requests: list[_Request], sizes: np.ndarray) -> tuple[RequestSpan, ...]:
    """Where each request sits in the batch; requests without an id have id "" (replay
    needs every request's size to rebuild the per-request steps)."""
    starts = np.cumsum(sizes) - sizes
    return tuple(
        RequestSpan(r.request_id, start, size)
        for r, start, size in zip(requests, starts.tolist(), sizes.tolist(), strict=True)
    )


@contextlib.contextmanager
def _refused_unless_logged(what: str) -> Iterator[None]:
    """A change whose log record could not be written is refused with UNAVAILABLE."""
    try:
        yield
    except DurabilityError as err:
        raise ServiceError(grpc.StatusCode.UNAVAILABLE,
                           f"{what} not logged, nothing changed: {err}") from None


def _copy_result(source: Future, target: Future) -> None:
    if source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())


def _settle(future: Future, fn: Callable[[Any], Any], arg: Any) -> None:
    try:
        future.set_result(fn(arg))
    except Exception as err:
        future.set_exception(err)


def _fail(requests: list[_Request], error: Exception) -> None:
    for request in requests:
        if not request.future.done():
            request.future.set_exception(error)
