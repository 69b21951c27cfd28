"""A bounded FIFO of requests, counted in samples, that a learner drains in micro-batches.

Producers (request threads) `put` work; the one consumer (the learner thread) `take`s
everything waiting up to a maximum number of samples, blocking only while the queue is
empty: no polling and no artificial delay, so a lone request is served at once and
concurrent requests pile up into large micro-batches. Items are never split, so each
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
            self._not_empty.notify()

    def take(self, max_samples: int, timeout: float | None = None) -> list[WorkItem] | None:
        """Block until work is waiting, then remove and return a micro-batch of it.

        Returns a lone control item, or consecutive sample items totalling at most
        `max_samples` samples (at least one item, even if it alone is larger). Returns
        an empty list once the queue is closed and drained, and None if `timeout`
        seconds passed with nothing to take.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._not_empty:
            while not self._items and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._not_empty.wait(remaining)
            if not self._items:
                return []
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

    def close(self) -> None:
        """Refuse new work; what is queued is still handed out by `take`."""
        with self._not_empty:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
