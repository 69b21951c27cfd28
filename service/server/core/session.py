"""`ModelSession`: one served model's state and every change to it, without threads.

A session is driven by one caller at a time (the `LiveModel` lock holder, or recovery
at start-up). For a micro-batch of whole requests it, in this order:

1. answers requests whose `request_id` it already acknowledged (exactly-once: the
   original answer, nothing applied twice);
2. logs the batch to the model's write-ahead log (one write, one fsync: group commit);
3. applies it with one `engine.process` call (per-sample learn flags);
4. returns each request's own rows, refused samples and step: acknowledged = logged +
   applied.

Resets, restores, hyper-parameter updates and snapshots are the other changes. At
start-up the session is the target of recovery (newest snapshot + log replay), and
replay goes through the same `_run` as the live batches, so the weights come back bit
for bit. Refusals are the domain errors of `service.errors`; nothing here knows about
gRPC.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from service.answer import Answer
from service.errors import (
    DataLossError,
    DomainError,
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from service.model import HebbianStack, StackConfig
from service.model.engine import EngineResult
from service.model.layer_state import HebbianState
from service.model.quality import LayerStatsValues, QualityTracker
from service.model.stability import rate_warning
from service.model.updates import LayerChanges
from service.server.core.bounds import quote
from service.server.core.refusals import RefusalTracker
from service.state.dedup import RequestWindow
from service.state.records import BatchRecord, RequestSpan
from service.state.snapshot import CorruptSnapshotError, SnapshotInfo
from service.state.store import ModelStore, RecoveryReport
from service.state.wal import DurabilityError

log = logging.getLogger(__name__)

SNAPSHOT_RETRY_S = 10.0  # seconds between scheduled snapshot attempts after one failed


class SampleRequest(NamedTuple):
    """Validated samples (n, input_dim) float32 to apply, with their learn switch and id."""

    samples: np.ndarray
    learn: bool
    request_id: str = ""


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
    """When a model persists a snapshot on its own (besides the Snapshot RPC and stop)."""

    every_samples: int = 100_000
    every_seconds: float = 300.0


class ModelObserver(Protocol):
    """Where a session reports what it did (the model's metrics)."""

    def observe_batch(self, samples: int, learned: int, inferred: int, skipped: int,
                      seconds: float) -> None: ...
    def read_step(self, fn: Callable[[], int]) -> None: ...
    def reject(self, reason: str, samples: int) -> None: ...
    def set_skipped_fraction(self, fraction: float) -> None: ...


class _Counters(NamedTuple):
    step: int
    inferred: int
    skipped: int


class ModelSession:
    """Owns one model (a `HebbianStack`), its store, request window and counters.

    Args:
      name: the model's name.
      stack: the built model; only this session changes it.
      store: the model's durable store, or None for a model kept in memory only.
      observer: the model's metrics.
      is_default: whether this is the server's default model.
      schedule: when `snapshot_due` says a snapshot should be taken.
      window: acknowledged request ids kept for exactly-once delivery.
    """

    def __init__(
        self,
        name: str,
        stack: HebbianStack,
        *,
        store: ModelStore | None,
        observer: ModelObserver,
        is_default: bool = False,
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
        self._observer = observer
        self._schedule = schedule or SnapshotSchedule()
        self._window = window or RequestWindow()
        self.quality = QualityTracker(stack)
        self._counters = _Counters(stack.engine.step, 0, 0)
        self._refusals = RefusalTracker()
        self._reported_fraction = 0.0
        self._last_skipped = 0  # learning samples the last batch refused
        self._rates_checked = False  # whether the learning rates met the data's scale yet
        self._created_hyper = stack.hyper_parameters()  # of snapshots that carry none
        self._unsnapshotted = 0  # changes applied since the last snapshot
        self._snapshot_time = time.monotonic()
        self._snapshot_retry_at = 0.0  # time.monotonic() before which no scheduled attempt
        observer.read_step(lambda: self._counters.step)

    # -- learning and inference ----------------------------------------------------------

    def process(self, requests: Sequence[SampleRequest]) -> list[Answer | DomainError]:
        """Apply a micro-batch of whole requests, in order; each request's result.

        A request gets its `Answer`, or a `DomainError` when it was refused (UNAVAILABLE:
        its batch could not be logged; nothing of it was applied).
        """
        results: list[Answer | DomainError | None] = [None] * len(requests)
        if len(requests) == 1 and not requests[0].request_id:  # the common case: fresh
            self._process_fresh(requests, _FIRST, results)
            return results  # type: ignore[return-value]
        fresh: list[int] = []
        repeats: list[tuple[int, int]] = []  # (index, index of the first with that id)
        first_of: dict[str, int] = {}
        for index, request in enumerate(requests):
            rid = request.request_id
            answer = self._window.get(rid)
            if answer is not None:
                results[index] = answer
            elif rid and rid in first_of:
                repeats.append((index, first_of[rid]))
            else:
                if rid:
                    first_of[rid] = index
                fresh.append(index)
        if fresh:
            self._process_fresh(requests, fresh, results)
        for index, first in repeats:
            results[index] = results[first]
        return results  # type: ignore[return-value]

    def _process_fresh(self, requests: Sequence[SampleRequest], fresh: Sequence[int],
                       results: list) -> None:
        batch = requests if len(fresh) == len(requests) else [requests[i] for i in fresh]
        samples, flags, spans, learning = _batch(batch)
        if self.store is not None:
            try:
                self.store.append_batch(samples, flags, spans)
            except DurabilityError as err:
                self._refuse_unlogged(requests, fresh, results, err)
                return
        if learning and not self._rates_checked:
            self._check_rates(samples)
        started = time.perf_counter()
        answers = self._run(samples, flags, spans, learning)
        seconds = time.perf_counter() - started
        for index, answer in zip(fresh, answers, strict=True):
            results[index] = answer
        self.quality.observe(samples)
        skipped = self._last_skipped
        self._observer.observe_batch(len(flags), learning - skipped, len(flags) - learning,
                                     skipped, seconds)

    def _refuse_unlogged(self, requests: Sequence[SampleRequest], fresh: Sequence[int],
                         results: list, err: DurabilityError) -> None:
        """The batch could not be logged (e.g. the disk is full): refuse every request that
        needs a log record (UNAVAILABLE, nothing applied); answer the inference-only ones
        without an id, which need none, from the weights as they are."""
        readers = []
        for index in fresh:
            if _needs_record(requests[index]):
                results[index] = UnavailableError(f"not logged: {err}")
            else:
                readers.append(index)
        if readers:
            samples, flags, spans, learning = _batch([requests[i] for i in readers])
            for index, answer in zip(readers, self._run(samples, flags, spans, learning),
                                     strict=True):
                results[index] = answer

    def _run(self, samples: np.ndarray, flags: np.ndarray, spans: Sequence[RequestSpan],
             learning: int | None = None) -> list[Answer]:
        """Apply a (logged) batch: the engine call, the counters, the request window.
        `learning` is the number of learn flags set, when the caller knows it."""
        if learning is None:
            learning = int(np.count_nonzero(flags))
        engine = self.stack.engine
        step_before = engine.step
        result = engine.process(samples, flags)
        # the engine's step counts the learning samples it applied: the others were refused
        skipped = learning - (result.step - step_before)
        answers = self._account(spans, len(flags), learning, skipped, flags, result)
        for span, answer in zip(spans, answers, strict=True):
            if span.request_id:
                self._window.add(span.request_id, answer)
        return answers

    def _account(self, spans: Sequence[RequestSpan], size: int, learning: int,
                 skipped: int, flags: np.ndarray, result: EngineResult) -> list[Answer]:
        """Advance the counters by one applied batch; the per-request answers."""
        before = self._counters
        self._last_skipped = skipped
        self._counters = _Counters(
            result.step, before.inferred + size - learning, before.skipped + skipped
        )
        self._watch_refusals(learning, skipped)
        self._unsnapshotted += size
        if len(spans) == 1:  # the common case, without the cumulative sums
            refused = np.flatnonzero(result.skipped).astype(np.int32) if skipped else _NONE
            return [Answer(result.activations, refused, result.step)]
        applied = np.cumsum(flags & ~result.skipped)
        answers = []
        for span in spans:
            stop = span.start + span.count
            refused = (np.flatnonzero(result.skipped[span.start:stop]).astype(np.int32)
                       if skipped else _NONE)
            answers.append(Answer(result.activations[span.start:stop], refused,
                                  before.step + int(applied[stop - 1])))
        return answers

    def _check_rates(self, samples: np.ndarray) -> None:
        """Once per model (again after an update, reset or restore): warn when the first
        samples it learns from are too large for its first layer's learning rates."""
        self._rates_checked = True
        message = rate_warning(self.stack.params[0], samples,
                               self.stack.layer_states()[0].kernel)
        if message:
            log.warning("model %r: %s", self.name, message)

    def _watch_refusals(self, learning: int, refused: int) -> None:
        """Track the refused share of recent learning samples; log when the model starts
        (one WARNING) or stops refusing most of its updates."""
        change = self._refusals.observe(learning, refused)
        if self._refusals.fraction != self._reported_fraction:  # the gauge only when it moved
            self._reported_fraction = self._refusals.fraction
            self._observer.set_skipped_fraction(self._reported_fraction)
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
        self._reported_fraction = 0.0
        self._rates_checked = False
        self._observer.set_skipped_fraction(0.0)

    # -- other changes -------------------------------------------------------------------

    def update(self, changes: LayerChanges) -> ModelStatus:
        """Change hyper-parameters (one dict per layer, `service.model.updates`), keeping
        the learned state; logged, so that replay applies it at the same position.

        Raises:
          InvalidInputError: a value the layer refuses (nothing logged or changed).
          UnavailableError: the update could not be logged.
        """
        try:
            self.stack.check_update(changes)
        except ValueError as err:
            raise InvalidInputError(f"model {self.name!r}: {err}; nothing changed",
                                    "bad_update") from None
        if self.store is not None:
            with _refused_unless_logged("UpdateModel"):
                self.store.append_update(changes)
        self.replay_update(changes)
        self._rates_checked = False
        self._unsnapshotted += 1
        return self.status()


    def reset(self, seed: int | None = None) -> ModelStatus:
        """Re-initialise the weights from `seed` (None: the model's seeds); step goes to 0."""
        if self.store is not None:
            with _refused_unless_logged("Reset"):
                self.store.append_reset(seed)
        self.replay_reset(seed)
        return self.status()

    def restore(self, snapshot_id: str) -> ModelStatus:
        """Go back to the state of snapshot `snapshot_id`.

        Raises:
          NotFoundError: no such snapshot. DataLossError: the snapshot is damaged.
          FailedPreconditionError: no data directory. UnavailableError: the restore was not logged.
        """
        store = self._require_store("Restore")
        try:
            header, arrays = store.read_snapshot(snapshot_id)
        except KeyError:
            known = ", ".join(s.snapshot_id for s in store.list_snapshots()) or "none"
            raise NotFoundError(
                f"model {self.name!r} has no snapshot {quote(snapshot_id)}; snapshots: {known}"
            ) from None
        except CorruptSnapshotError as err:
            raise DataLossError(
                f"model {self.name!r}: snapshot {snapshot_id} cannot be restored, nothing "
                f"changed: {err}"
            ) from None
        with _refused_unless_logged("Restore"):
            store.append_restore(snapshot_id)
        self.load_snapshot(header, arrays)
        self._unsnapshotted += 1
        return self.status()

    def snapshot(self) -> tuple[SnapshotInfo, dict[str, np.ndarray]]:
        """Persist the state now; the snapshot's description and the state's arrays.

        Raises:
          FailedPreconditionError: no data directory. UnavailableError: it could not be written.
        """
        store = self._require_store("Snapshot")
        step, arrays, header = self.snapshot_contents()
        try:
            info = store.write_snapshot(step, arrays, header)
        except OSError as err:  # e.g. a full disk: the log still holds everything
            raise UnavailableError(f"snapshot not written ({err.strerror or err}); the log still "
                              "holds every acknowledged change") from err
        self._unsnapshotted = 0
        self._snapshot_time = time.monotonic()
        return info, {key: value for key, value in arrays.items()
                      if not key.startswith("window.")}

    def snapshot_contents(self) -> tuple[int, dict[str, np.ndarray], dict]:
        """(step, arrays, header) of a snapshot of the state now (what `snapshot` writes)."""
        ids, window = self._window.to_arrays()
        counters = self._counters
        header = {
            "counters": {"step": counters.step, "inferred": counters.inferred,
                         "skipped": counters.skipped},
            "window_ids": ids,
            "create_time": self.create_time,
            "seeds": list(self.stack.seeds),  # what reset() starts from
            "hyper_parameters": list(self.stack.hyper_parameters()),  # after updates
        }
        return counters.step, {**self.stack.state_arrays(), **window}, header

    def _require_store(self, what: str) -> ModelStore:
        if self.store is None:
            raise FailedPreconditionError(
                f"{what} needs a data directory; this server keeps models in memory only "
                "(start it with --data-dir)"
            )
        return self.store

    # -- the snapshot schedule -----------------------------------------------------------

    def seconds_to_snapshot(self) -> float | None:
        """Seconds until a time-based snapshot is due (None: none is, nothing changed)."""
        if self.store is None or not self._unsnapshotted:
            return None
        now = time.monotonic()
        elapsed = now - self._snapshot_time
        return max(0.0, self._schedule.every_seconds - elapsed, self._snapshot_retry_at - now)

    def snapshot_due(self) -> bool:
        """Whether the schedule asks for a snapshot now (cheap: called after every batch)."""
        if self.store is None or not self._unsnapshotted:
            return False
        now = time.monotonic()
        if now < self._snapshot_retry_at:  # the last attempt failed
            return False
        return (self._unsnapshotted >= self._schedule.every_samples
                or now - self._snapshot_time >= self._schedule.every_seconds)

    def snapshot_if_due(self) -> SnapshotInfo | None:
        """Take the scheduled snapshot if one is due; a failure is logged and retried later."""
        if not self.snapshot_due():
            return None
        try:
            return self.snapshot()[0]
        except Exception:  # the log still has everything; try again a little later
            log.exception("model %r: snapshot failed; next attempt in %.0f s", self.name,
                          SNAPSHOT_RETRY_S)
            self._snapshot_retry_at = time.monotonic() + SNAPSHOT_RETRY_S
            return None

    def close(self, final_snapshot: bool = True) -> None:
        """Write the final snapshot if anything is not in one yet (unless deleting); close."""
        if self.store is None:
            return
        try:
            last = self.store.last_snapshot
            if final_snapshot and (self._unsnapshotted or last is None
                                   or last.seq < self.store.last_seq):
                info, _ = self.snapshot()
                log.info("model %r: final snapshot %s at step %d", self.name, info.snapshot_id,
                         info.step)
        except Exception:
            log.exception("model %r: final snapshot failed; the log still holds everything",
                          self.name)
        finally:
            self.store.close()

    # -- reading -------------------------------------------------------------------------

    def status(self) -> ModelStatus:
        """The model's name, config, counters and live layer statistics."""
        counters = self._counters
        return ModelStatus(
            name=self.name,
            config=self.stack.resolved_config(),
            step=counters.step,
            samples_inferred=counters.inferred,
            samples_skipped=counters.skipped,
            layer_stats=self.quality.layer_stats(),
            create_time=self.create_time,
            is_default=self.is_default,
            last_snapshot=self.store.last_snapshot if self.store else None,
            recent_skipped_fraction=self._refusals.fraction,
            refusing_updates=self._refusals.refusing,
        )

    def model_state(self) -> ModelState:
        """The full learning state (all layers' arrays, step, config); writes nothing."""
        return ModelState(self.name, self.stack.resolved_config(), self._counters.step,
                          self.stack.layer_states())

    def warm_up(self) -> None:
        """Compile (or load) everything the engine runs; no state change."""
        started = time.perf_counter()
        self.stack.engine.warm_up()
        log.info("model %r warmed up in %.2fs", self.name, time.perf_counter() - started)

    # -- recovery (`service.state.store.RecoveryTarget`) ---------------------------------

    def recover(self) -> RecoveryReport | None:
        """Rebuild the state from the store: newest snapshot + replay of the log after it."""
        if self.store is None:
            return None
        report = self.store.recover(self)
        self._snapshot_time = time.monotonic()
        return report

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
        self.quality.reset()

    def replay_batch(self, record: BatchRecord) -> None:
        """Apply a logged micro-batch exactly as it was applied live."""
        spans = record.requests or (RequestSpan("", 0, len(record.samples)),)
        self._run(record.samples, record.learn, spans)

    def replay_reset(self, seed: int | None) -> None:
        """Apply a (logged) reset."""
        self.stack.reset(seed)
        self.quality.reset()
        self._window.clear()
        self._clear_refusals()
        self._counters = _Counters(self.stack.engine.step, 0, 0)
        self._unsnapshotted += 1

    def replay_update(self, changes: LayerChanges) -> None:
        """Apply a (logged) hyper-parameter update."""
        self.stack.update(changes)


def _needs_record(request: SampleRequest) -> bool:
    """Whether applying `request` changes durable state: it learns, or its id joins the
    exactly-once window. An inference-only request without an id can be answered when
    its batch cannot be logged (only its count in `samples_inferred` is then not durable)."""
    return request.learn or bool(request.request_id)


_FIRST = (0,)  # the indices `_process_fresh` takes of a lone fresh request
_NONE = np.zeros(0, np.int32)
_NONE.flags.writeable = False
_FLAG_VIEWS = 4096  # batches up to this size take their learn flags as a view, no copy
_FLAGS = {flag: np.full(_FLAG_VIEWS, flag) for flag in (False, True)}
for _flags in _FLAGS.values():
    _flags.flags.writeable = False


def _batch(requests: Sequence[SampleRequest]
           ) -> tuple[np.ndarray, np.ndarray, tuple[RequestSpan, ...], int]:
    """(samples, learn flags, spans, learning samples) of requests applied as one batch.

    Spans say where each request sits in the batch; requests without an id have id ""
    (replay needs every request's size to rebuild the per-request steps)."""
    if len(requests) == 1:  # the common case: no concatenation, the flags a view
        samples, learn, request_id = requests[0]
        n = len(samples)
        flags = _FLAGS[learn][:n] if n <= _FLAG_VIEWS else np.full(n, learn)
        return samples, flags, (RequestSpan(request_id, 0, n),), n if learn else 0
    sizes = [len(r.samples) for r in requests]
    samples = np.concatenate([r.samples for r in requests])
    flags = np.repeat(np.fromiter((r.learn for r in requests), bool, len(requests)), sizes)
    spans, start = [], 0
    for request, size in zip(requests, sizes, strict=True):
        spans.append(RequestSpan(request.request_id, start, size))
        start += size
    learning = sum(size for request, size in zip(requests, sizes, strict=True)
                   if request.learn)
    return samples, flags, tuple(spans), learning


@contextlib.contextmanager
def _refused_unless_logged(what: str) -> Iterator[None]:
    """A change whose log record could not be written is refused with UNAVAILABLE."""
    try:
        yield
    except DurabilityError as err:
        raise UnavailableError(f"{what} not logged, nothing changed: {err}") from None
