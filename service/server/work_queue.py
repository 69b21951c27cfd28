"""A bounded FIFO of requests, counted in samples, that a learner drains in micro-batches.

Producers (request threads) `put` work; the one consumer (the learner thread) `take`s
everything waiting up to a maximum number of samples. An idle consumer is woken by the
first item and takes it at once, so a lone request is served without delay. A consumer
that is behind (work was already waiting when it came back for more) may *linger*: it
waits a little longer, in short slices, while more work keeps arriving, so that a busy
stream is applied in large micro-batches instead of one engine call per message
(adaptive micro-batching: the delay appears only under load, and stops as soon as the
traffic pauses or the batch is full). Items are never split, so each
request's samples stay together and in order. Producers block while the queue holds
`capacity` samples (back-pressure), unless it is empty: one oversized item always fits.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any


class QueueClosedError(Exception):
    """The queue no longer accepts work (its model is being deleted or the server stops)."""


class QueueFullError(Exception):
    """No room for the item before the producer's timeout."""


@dataclass(frozen=True)
class WorkItem:
    """One unit of work: `samples` samples (0 for a control item that runs alone)."""

    payload: Any
    samples: int
    control: bool = False


class WorkQueue:
    """Thread-safe bounded FIFO of `WorkItem`s with micro-batch draining.

    Args:
      capacity: samples the queue holds before `put` blocks.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1 sample; got {capacity}")
        self.capacity = capacity
        self._items: deque[WorkItem] = deque()
        self._samples = 0
        self._closed = False
        self._wake_at = 1  # samples waiting at which `put` wakes the consumer
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)

    @property
    def depth(self) -> int:
        """Samples waiting."""
        return self._samples

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def put(self, item: WorkItem, timeout: float | None = None) -> None:
        """Append `item`, waiting up to `timeout` seconds for room.

        Raises:
          QueueClosedError: the queue was closed (before or while waiting).
          QueueFullError: still no room after `timeout`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._not_full:
            while not self._closed and self._items and self._samples + item.samples > self.capacity:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QueueFullError(f"{self._samples} samples already queued")
                self._not_full.wait(remaining)
            if self._closed:
                raise QueueClosedError
            self._items.append(item)
            self._samples += item.samples
            if self._samples >= self._wake_at or item.control:
                self._not_empty.notify()

    def take(
        self, max_samples: int, timeout: float | None = None, *,
        linger: float = 0.0, linger_slice: float = 0.001,
    ) -> list[WorkItem] | None:
        """Block until work is waiting, then remove and return a micro-batch of it.

        Returns a lone control item, or consecutive sample items totalling at most
        `max_samples` samples (at least one item, even if it alone is larger). Returns
        an empty list once the queue is closed and drained, and None if `timeout`
        seconds passed with nothing to take.

        If work was already waiting when `take` was called and it is less than
        `max_samples`, it waits up to `linger` seconds for more, in slices of
        `linger_slice`: it stops early when a slice brings nothing new, when
        `max_samples` are waiting or when a control item arrives.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._not_empty:
            behind = bool(self._items)
            while not self._items and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._not_empty.wait(remaining)
            if not self._items:
                return []
            if behind and linger > 0:
                self._linger(max_samples, linger, linger_slice)
            first = self._items.popleft()
            batch, total = [first], first.samples
            if not first.control:
                while self._items:
                    nxt = self._items[0]
                    if nxt.control or total + nxt.samples > max_samples:
                        break
                    batch.append(self._items.popleft())
                    total += nxt.samples
            self._samples -= total
            self._not_full.notify_all()
            return batch

    def _linger(self, max_samples: int, linger: float, linger_slice: float) -> None:
        """Wait (lock held on entry) while work keeps arriving, up to `linger` seconds."""
        until = time.monotonic() + linger
        self._wake_at = max_samples
        try:
            seen = 0
            while not self._closed and self._samples < max_samples:
                if any(self._items[i].control for i in range(seen, len(self._items))):
                    return
                seen = len(self._items)
                left = until - time.monotonic()
                if left <= 0:
                    return
                self._not_empty.wait(min(left, linger_slice))
                if len(self._items) == seen:  # a quiet slice: the burst is over
                    return
        finally:
            self._wake_at = 1

    def close(self) -> None:
        """Refuse new work; what is queued is still handed out by `take`."""
        with self._not_empty:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
