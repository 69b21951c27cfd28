"""`Combiner`: one writer at a time, and the caller applies its own request (combining).

A thread that brings work (`run`) and finds the model idle becomes the *holder*: it
applies its own item at once, on its own thread, with no hand-off. Items that arrive
while a holder works wait in a FIFO; the holder takes them, whole and in order, as the
next micro-batch (up to `max_batch` samples) until its own item is done, then passes the
role to the thread of the oldest waiting item, or leaves the model idle. Concurrent
requests for one model are therefore applied in few, large batches (one log write and
one fsync each: group commit) without a dedicated thread, and requests for different
models run in parallel (the engines release the GIL).

Control items (reset, restore, snapshot, ...) run alone, in their place in the FIFO.
An item whose deadline passes or whose caller cancels it while it waits is withdrawn,
never applied. The queue holds at most `capacity` samples (back-pressure): a request
that finds it full waits for room until its deadline, unless the queue is empty (one
oversized request always fits).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from service.errors import (
    CallCancelledError,
    DeadlinePassedError,
    DomainError,
    InternalError,
    OverloadedError,
)

log = logging.getLogger(__name__)

_QUEUED, _TAKEN, _DONE = 0, 1, 2


class CombinerClosedError(Exception):
    """The combiner takes no more work (its model is being deleted or the server stops)."""


class Pending:
    """One request or control action handed to a `Combiner`, and its outcome.

    Args:
      payload: what the apply function gets (its meaning is the caller's).
      samples: samples it carries (0 for a control item, which runs alone).
      deadline: `time.monotonic()` after which it must not be applied (None: no deadline).
      control: whether it runs alone.
    """

    __slots__ = (
        "_error",
        "_promoted",
        "_result",
        "_state",
        "_wake",
        "_woken",
        "cancelled",
        "control",
        "deadline",
        "payload",
        "samples",
    )

    def __init__(self, payload: Any, samples: int = 0, deadline: float | None = None,
                 control: bool = False):
        self.payload = payload
        self.samples = samples
        self.deadline = deadline
        self.control = control
        self.cancelled = False
        self._state = _QUEUED
        self._result: Any = None
        self._error: BaseException | None = None
        self._wake: threading.Lock | None = None  # held while its thread waits
        self._promoted = False  # its thread is the next holder
        self._woken = False  # its waiting thread was woken

    def resolve(self, result: Any) -> None:
        """Set the item's result (by the apply function)."""
        if self._state != _DONE:
            self._result, self._state = result, _DONE

    def fail(self, error: BaseException) -> None:
        """Set the item's error (by the apply function)."""
        if self._state != _DONE:
            self._error, self._state = error, _DONE

    @property
    def done(self) -> bool:
        """Whether it has a result or an error."""
        return self._state == _DONE

    def outcome(self) -> Any:
        """The result, or raise the error."""
        if self._error is not None:
            raise self._error
        return self._result


class Combiner:
    """The FIFO and the holder role of one model.

    Args:
      apply: applies a batch (a lone control item, or consecutive sample items) and
        resolves or fails every item of it; an item it leaves open fails with Internal.
      max_batch: most samples per batch (whole items; a larger one runs alone).
      capacity: samples waiting before `run` blocks for room.
      on_withdrawn: told the samples of each item withdrawn before it was applied.
    """

    def __init__(self, apply: Callable[[list[Pending]], None], max_batch: int, capacity: int,
                 on_withdrawn: Callable[[int], None] | None = None):
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1 sample; got {capacity}")
        self._apply = apply
        self._on_withdrawn = on_withdrawn or (lambda samples: None)
        self._max_batch = max_batch
        self.capacity = capacity
        self._mutex = threading.Lock()
        self._room = threading.Condition(self._mutex)
        self._queue: deque[Pending] = deque()
        self._queued_samples = 0
        self._busy = False
        self._closed = False
        self._room_waiters = 0  # threads waiting in `_wait_for_room`

    @property
    def depth(self) -> int:
        """Samples waiting (not counting the batch being applied)."""
        return self._queued_samples

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def run(self, item: Pending, *, final: bool = False) -> Any:
        """Apply `item` (as the holder, or by waiting for the holder); its outcome.

        `final` admits the item after `close` (the model's last action).

        Raises:
          CombinerClosedError: `close` was called.
          OverloadedError: the queue stayed full until the item's deadline.
          DeadlinePassedError, CallCancelledError: withdrawn before it was applied.
          what the apply function failed the item with.
        """
        self.submit(item, final=final)
        return self.wait(item)

    def submit(self, item: Pending, *, final: bool = False) -> None:
        """Queue `item`; if the model is idle, apply it (and what queues behind it) now, on
        this thread. Returns once it is done or queued behind a holder: `wait` for it.

        Raises:
          CombinerClosedError, OverloadedError: as `run` (nothing was queued).
        """
        with self._mutex:
            if self._closed and not final:
                raise CombinerClosedError
            self._wait_for_room(item)
            self._queue.append(item)
            self._queued_samples += item.samples
            holder = not self._busy
            self._busy = True
        if holder:
            self._hold(item)

    def run_if_idle(self, fn: Callable[[Any], Any], arg: Any) -> tuple[bool, Any]:
        """If the model is idle (no holder, nothing queued, not closed), run `fn(arg)` now
        as the holder, on this thread: (True, its result). Else (False, None) at once, and
        the caller queues its work as usual. Requests that queue meanwhile are applied
        after it, as behind any holder. `fn`'s exceptions are raised, the role released."""
        with self._mutex:
            if self._busy or self._queue or self._closed:
                return False, None
            self._busy = True
        try:
            return True, fn(arg)
        finally:
            with self._mutex:
                passed = self._pass_on()
            if not passed:  # items queued with nobody waiting for them: apply them too
                self._hold(_FINISHED)

    def wait(self, item: Pending) -> Any:
        """The outcome of a submitted item; the waiting thread may become the holder.

        Raises what `run` raises, but CombinerClosedError and OverloadedError."""
        if item._state == _DONE:  # applied by `submit`'s thread (final: no lock needed)
            return item.outcome()
        with self._mutex:
            if item._state == _QUEUED and item.cancelled and item not in self._queue:
                # withdrawn before it was submitted (and perhaps never will be)
                item.fail(CallCancelledError("the call ended before its samples were applied"))
            if item._state == _DONE:
                return item.outcome()
            item._wake = threading.Lock()
            item._wake.acquire()
        if self._wait(item):
            self._hold(item)
        return item.outcome()

    def withdraw(self, item: Pending) -> None:
        """The caller gave up (its call was cancelled): never apply `item` if not begun."""
        with self._mutex:
            item.cancelled = True
            if item._state != _QUEUED or item._promoted:
                return  # begun (or about to be): it runs to its end
            if item in self._queue:
                self._remove(item)
            elif item._wake is None:
                return  # not submitted yet and nobody waits: dropped when submitted
            item.fail(CallCancelledError("the call ended before its samples were applied"))
            _wake_waiter(item)

    def close(self) -> None:
        """Refuse new work (what is queued is still applied)."""
        with self._mutex:
            self._closed = True
            self._notify_room()

    def _wait_for_room(self, item: Pending) -> None:
        """(mutex held) Wait while the queue is full; OverloadedError at the deadline."""
        while (self._queue and not item.control
               and self._queued_samples + item.samples > self.capacity):
            remaining = None if item.deadline is None else item.deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise OverloadedError(
                    f"the model is overloaded ({self._queued_samples} samples already "
                    "queued); the deadline passed while waiting"
                )
            self._room_waiters += 1
            try:
                self._room.wait(remaining)
            finally:
                self._room_waiters -= 1

    def _wait(self, item: Pending) -> bool:
        """Wait for the holder; True when this thread became the holder."""
        deadline = item.deadline
        while True:
            remaining = -1 if deadline is None else max(0.0, deadline - time.monotonic())
            woke = item._wake.acquire(timeout=remaining)
            with self._mutex:
                if item._promoted:
                    return True
                if item._state == _DONE:
                    return False
                if item._state == _QUEUED and not woke:  # its deadline passed while queued
                    if item in self._queue:
                        self._remove(item)
                    item.fail(DeadlinePassedError(
                        "the deadline passed while the samples were queued; nothing was "
                        "applied"
                    ))
                    return False
                deadline = None  # being applied: wait for its end whatever the deadline

    def _hold(self, item: Pending) -> None:
        """Apply batches from the queue until `item` is done; then pass the role on (or,
        when no thread waits for what is queued, go on applying it)."""
        while True:
            with self._mutex:
                batch = self._take()
            if batch:
                try:
                    self._apply(batch)
                except DomainError as err:
                    _fail_open(batch, err)
                except Exception as err:  # never leave a caller waiting
                    log.exception("a batch failed")
                    _fail_open(batch, InternalError(f"batch failed: {type(err).__name__}: {err}"))
                if not all(other.done for other in batch):
                    _fail_open(batch, InternalError("the batch left this request unanswered"))
            with self._mutex:
                for other in batch:
                    _wake_waiter(other)
                if item._state == _DONE and self._pass_on():
                    return

    def _take(self) -> list[Pending]:
        """(mutex held) The next batch; drops withdrawn and expired items on the way."""
        batch: list[Pending] = []
        total = 0
        now = time.monotonic()
        while self._queue:
            head = self._queue[0]
            if head.cancelled or (head.deadline is not None and now >= head.deadline):
                self._queue.popleft()
                self._queued_samples -= head.samples
                head.fail(CallCancelledError("the call ended before its samples were applied")
                          if head.cancelled else DeadlinePassedError(
                              "the deadline passed while the samples were queued; nothing "
                              "was applied"))
                _wake_waiter(head)
                self._on_withdrawn(head.samples)
                continue
            if batch and (head.control or batch[0].control
                          or total + head.samples > self._max_batch):
                break
            self._queue.popleft()
            self._queued_samples -= head.samples
            head._state = _TAKEN
            batch.append(head)
            total += head.samples
            if head.control:
                break
        if batch:
            self._notify_room()
        return batch

    def _pass_on(self) -> bool:
        """(mutex held) Hand the holder role to the thread of the oldest item it waits for,
        or go idle when nothing is queued. False: queued items nobody waits for yet (their
        threads submitted them and went on): the holder must apply them itself."""
        for queued in self._queue:
            if queued._wake is not None and not queued._woken:
                queued._promoted = True
                _wake_waiter(queued)
                return True
        if self._queue:
            return False
        self._busy = False
        self._notify_room()
        return True

    def _notify_room(self) -> None:
        """(mutex held) Wake the threads waiting for room, if any (most often none)."""
        if self._room_waiters:
            self._room.notify_all()

    def _remove(self, item: Pending) -> None:
        """(mutex held) Take a queued item out of the FIFO: it is withdrawn."""
        self._queue.remove(item)
        self._queued_samples -= item.samples
        self._notify_room()
        self._on_withdrawn(item.samples)


_FINISHED = Pending(None, control=True)  # the item of a `run_if_idle` holder: done already
_FINISHED.resolve(None)


def _wake_waiter(item: Pending) -> None:
    """(mutex held) Wake the thread waiting for `item`, if one waits and was not woken."""
    if item._wake is not None and not item._woken:
        item._woken = True
        item._wake.release()


def _fail_open(batch: list[Pending], error: BaseException) -> None:
    for item in batch:
        if not item.done:
            item.fail(error)
