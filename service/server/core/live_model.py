"""`LiveModel`: a served model, a `ModelSession` behind its `Combiner`.

Every change to the model goes through the combiner, so exactly one thread at a time
drives the session: the caller applies its own request (and whatever queued behind it),
control actions (reset, restore, snapshot, warm-up, the final snapshot) run alone in
their place. Reads of the status need no turn. Nothing here knows about gRPC.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from service.answer import Answer
from service.errors import DomainError, ModelMovingError, ModelNotFoundError
from service.model.updates import LayerChanges
from service.server.core.combining import Combiner, CombinerClosedError, Pending
from service.server.core.session import ModelSession, ModelState, ModelStatus, SampleRequest
from service.state.snapshot import SnapshotInfo


class LiveModel:
    """One model being served.

    Args:
      session: the model's state and its changes.
      metrics: the model's metrics (queue depth, rejected samples).
      max_batch: most samples per micro-batch.
      max_queued_samples: samples waiting before a request waits for room.
    """

    def __init__(self, session: ModelSession, *, metrics: Any, max_batch: int,
                 max_queued_samples: int):
        self.session = session
        self.name = session.name
        self.input_dim = session.input_dim
        self.output_dim = session.output_dim
        self.ready = threading.Event()  # set once warmed up
        self._metrics = metrics
        self._moving: str | None = None  # why it takes no writes (being moved), or None
        self._combiner = Combiner(self._apply, max_batch, max_queued_samples,
                                  on_withdrawn=lambda n: metrics.reject("abandoned", n))
        metrics.set_stats_source(session.quality.layer_stats)
        metrics.read_queue_depth(lambda: self._combiner.depth)

    @property
    def stack(self):
        """The model's layer stack (read-only use: its params and config)."""
        return self.session.stack

    @property
    def store(self):
        """The model's durable store, or None for a model kept in memory only."""
        return self.session.store

    @property
    def is_default(self) -> bool:
        """Whether this is the server's default model."""
        return self.session.is_default

    # -- learning and inference ----------------------------------------------------------

    def request(self, samples: np.ndarray, learn: bool, request_id: str = "",
                timeout: float | None = None) -> Pending:
        """A request of validated samples (n, input_dim) float32, to `run` (or `withdraw`).

        `timeout` is the caller's time left: a request still queued when it passes is
        not applied (DeadlinePassedError).
        """
        return self.pending(SampleRequest(samples, bool(learn), request_id), timeout)

    def pending(self, request: SampleRequest, timeout: float | None = None) -> Pending:
        """`request` as a `Pending` to `run` or `submit` (`timeout`: as for `request`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return Pending(request, len(request.samples), deadline)

    def apply_if_idle(self, request: SampleRequest) -> Answer | None:
        """Apply `request` now, on this thread, if the model is idle: its answer. None when
        another thread holds the model or work is queued (or the model is being deleted):
        then `submit` a `pending` of it, to be applied in order behind them.

        Raises what `run` raises for a request applied (ModelMovingError, UnavailableError).
        """
        applied, result = self._combiner.run_if_idle(self._apply_one, request)
        if isinstance(result, DomainError):
            raise result
        return result if applied else None

    def run(self, pending: Pending) -> Answer:
        """Apply a request made by `request`; its answer.

        Raises:
          ModelNotFoundError: the model is being deleted.
          OverloadedError, DeadlinePassedError, CallCancelledError, UnavailableError:
            nothing was applied.
        """
        try:
            return self._combiner.run(pending)
        except CombinerClosedError:
            raise ModelNotFoundError(f"model {self.name!r} is being deleted") from None

    def submit(self, pending: Pending) -> None:
        """Queue a request without waiting for it (applying it now if the model is idle);
        `wait` for its answer. Raises what `run` raises for a request not queued."""
        try:
            self._combiner.submit(pending)
        except CombinerClosedError:
            raise ModelNotFoundError(f"model {self.name!r} is being deleted") from None

    def wait(self, pending: Pending) -> Answer:
        """The answer of a submitted request (see `run` for what it raises)."""
        return self._combiner.wait(pending)

    def process(self, samples: np.ndarray, learn: bool, request_id: str = "",
                timeout: float | None = None) -> Answer:
        """`run(request(...))`: apply samples and return their answer."""
        return self.run(self.request(samples, learn, request_id, timeout))

    def withdraw(self, pending: Pending) -> None:
        """The caller's call ended: `pending` is not applied unless it already began."""
        self._combiner.withdraw(pending)

    def reject(self, reason: str, samples: int) -> None:
        """Count a request refused before it was queued (for the metrics)."""
        self._metrics.reject(reason, samples)

    # -- other changes, in their turn --------------------------------------------------

    def reset(self, seed: int | None = None) -> ModelStatus:
        """Re-initialise the weights (after the requests queued before it); step goes to 0."""
        return self._write(self.session.reset, seed)

    def restore(self, snapshot_id: str) -> ModelStatus:
        """Go back to the state of snapshot `snapshot_id` (after the queued requests)."""
        return self._write(self.session.restore, snapshot_id)

    def update(self, changes: LayerChanges) -> ModelStatus:
        """Change hyper-parameters keeping the state (after the queued requests); logged."""
        return self._write(self.session.update, changes)

    def model_state(self) -> ModelState:
        """The full learning state, read in the model's turn; writes nothing."""
        return self._control(lambda _: self.session.model_state(), None)

    def snapshot(self) -> tuple[SnapshotInfo, dict[str, np.ndarray]]:
        """Persist the state now (after the requests queued before it)."""
        return self._write(lambda _: self.session.snapshot(), None)

    def snapshot_if_due(self) -> None:
        """Take the time-based snapshot if it is due (the snapshot timer calls this)."""
        if self.session.snapshot_due():
            self._control(lambda _: self.session.snapshot_if_due(), None)

    def seconds_to_snapshot(self) -> float | None:
        """Seconds until a time-based snapshot is due (None: nothing to snapshot)."""
        return self.session.seconds_to_snapshot()

    def warm_up(self) -> None:
        """Compile (or load) the engine's code in the model's turn; then `ready` is set."""
        try:
            self._control(lambda _: self.session.warm_up(), None)
        finally:
            self.ready.set()

    def status(self) -> ModelStatus:
        """The model's name, config, counters and live layer statistics."""
        return self.session.status()

    def resolved_config(self):
        """The model's config with every layer setting spelled out, seeds included."""
        return self.session.stack.resolved_config()

    def stop(self, *, final_snapshot: bool = True) -> None:
        """Refuse new work, finish what is queued, snapshot (unless deleting), close."""
        self._combiner.close()
        self._combiner.run(
            Pending((lambda _: self.session.close(final_snapshot), None), control=True),
            final=True,
        )

    # -- moving to another shard (service/sharding/moves.py) ---------------------------

    @property
    def moving(self) -> str | None:
        """Why the model takes no writes (it is being moved), or None."""
        return self._moving

    def freeze(self, reason: str) -> tuple[int, dict[str, np.ndarray], dict]:
        """Take no more writes, in the model's turn: the requests queued before it are
        applied (and acknowledged), every later request or change fails with
        `ModelMovingError(reason)` (UNAVAILABLE) until `unfreeze`; reads are served.
        Returns the (step, arrays, header) of a snapshot of the state at that point,
        which no acknowledged request is missing from. Freezing again returns the same."""
        def freeze(_: Any) -> tuple[int, dict[str, np.ndarray], dict]:
            self._moving = reason
            return self.session.snapshot_contents()

        return self._control(freeze, None)

    def unfreeze(self) -> ModelStatus:
        """Take writes again (a move given up); the model's status."""
        def thaw(_: Any) -> ModelStatus:
            self._moving = None
            return self.session.status()

        return self._control(thaw, None)

    def _write(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """`_control` of a change, refused while the model is frozen."""
        def checked(value: Any) -> Any:
            if self._moving is not None:
                raise ModelMovingError(self._moving)
            return fn(value)

        return self._control(checked, arg)

    def _control(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        try:
            return self._combiner.run(Pending((fn, arg), control=True))
        except CombinerClosedError:
            raise ModelNotFoundError(f"model {self.name!r} is being deleted") from None

    # -- the holder's work ---------------------------------------------------------------

    def _apply(self, batch: list[Pending]) -> None:
        first = batch[0]
        if first.control:
            fn, arg = first.payload
            first.resolve(fn(arg))
            return
        if self._moving is not None:  # frozen: nothing is logged or applied
            error = ModelMovingError(self._moving, "moving", sum(i.samples for i in batch))
            for item in batch:
                item.fail(error)
            return
        results = self.session.process([item.payload for item in batch])
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, DomainError):
                item.fail(result)
            else:
                item.resolve(result)
        if self.session.snapshot_due():
            self.session.snapshot_if_due()

    def _apply_one(self, request: SampleRequest) -> Answer | DomainError:
        """`_apply` of a lone request, without its `Pending` (`apply_if_idle`)."""
        if self._moving is not None:  # frozen: nothing is logged or applied
            return ModelMovingError(self._moving, "moving", len(request.samples))
        (result,) = self.session.process((request,))
        if self.session.snapshot_due():
            self.session.snapshot_if_due()
        return result
