"""The learner's queue: whole requests in order, micro-batches up to a limit, back-pressure."""

from __future__ import annotations

import threading
import time

import pytest

from service.server.work_queue import QueueClosedError, QueueFullError, WorkItem, WorkQueue


def items(*sizes: int) -> list[WorkItem]:
    return [WorkItem(f"r{i}", size) for i, size in enumerate(sizes)]


def test_take_returns_everything_waiting_in_order_up_to_the_sample_limit():
    queue = WorkQueue(capacity=1000)
    for item in items(3, 4, 2, 5):
        queue.put(item)

    assert [i.payload for i in queue.take(max_samples=9)] == ["r0", "r1", "r2"]
    assert [i.payload for i in queue.take(max_samples=9)] == ["r3"]
    assert queue.depth == 0


def test_a_request_larger_than_the_limit_is_taken_alone_and_never_split():
    queue = WorkQueue(capacity=1000)
    for item in items(50, 1):
        queue.put(item)

    assert [(i.payload, i.samples) for i in queue.take(max_samples=8)] == [("r0", 50)]


def test_a_control_item_runs_alone_between_sample_batches():
    queue = WorkQueue(capacity=1000)
    queue.put(WorkItem("a", 1))
    queue.put(WorkItem("reset", 0, control=True))
    queue.put(WorkItem("b", 1))

    assert [[i.payload for i in queue.take(100)] for _ in range(3)] == [["a"], ["reset"], ["b"]]


def test_take_blocks_until_work_arrives_without_polling():
    queue = WorkQueue(capacity=10)
    taken = []
    consumer = threading.Thread(target=lambda: taken.append(queue.take(10)))
    consumer.start()
    consumer.join(0.1)
    assert consumer.is_alive() and not taken

    queue.put(WorkItem("x", 1))
    consumer.join(5)
    assert [i.payload for i in taken[0]] == ["x"]


def test_put_blocks_while_full_and_times_out():
    queue = WorkQueue(capacity=4)
    queue.put(WorkItem("a", 4))

    with pytest.raises(QueueFullError):
        queue.put(WorkItem("b", 1), timeout=0.05)
    queue.take(10)
    queue.put(WorkItem("b", 1), timeout=0.05)  # room again
    assert queue.depth == 1


def test_an_oversized_item_fits_an_empty_queue():
    queue = WorkQueue(capacity=4)
    queue.put(WorkItem("big", 100), timeout=0)

    assert queue.depth == 100


def test_close_refuses_new_work_but_hands_out_what_is_queued():
    queue = WorkQueue(capacity=10)
    queue.put(WorkItem("a", 1))
    queue.close()

    with pytest.raises(QueueClosedError):
        queue.put(WorkItem("b", 1))
    assert [i.payload for i in queue.take(10)] == ["a"]
    assert queue.take(10) == []


# -- adaptive micro-batching ---------------------------------------------------------------


def _feed(queue: WorkQueue, count: int, every: float, size: int = 1) -> threading.Thread:
    """A producer putting `count` items of `size` samples, one per `every` seconds."""

    def run() -> None:
        for i in range(count):
            time.sleep(every)
            queue.put(WorkItem(f"late{i}", size))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_an_idle_consumer_takes_the_first_item_at_once_without_lingering():
    queue = WorkQueue(capacity=1000)
    taken = []
    consumer = threading.Thread(target=lambda: taken.append(queue.take(64, linger=5.0)))
    consumer.start()
    time.sleep(0.05)  # the consumer is idle, waiting
    started = time.monotonic()
    queue.put(WorkItem("lone", 1))
    consumer.join(5)

    assert [i.payload for i in taken[0]] == ["lone"]
    assert time.monotonic() - started < 1.0  # far below the 5 s linger


def test_a_consumer_that_is_behind_lingers_while_work_keeps_arriving():
    queue = WorkQueue(capacity=1000)
    queue.put(WorkItem("first", 1))  # waiting already: the consumer is behind
    producer = _feed(queue, count=5, every=0.01)

    batch = queue.take(64, linger=5.0, linger_slice=0.5)
    producer.join()

    assert [i.payload for i in batch] == ["first", *(f"late{i}" for i in range(5))]


def test_lingering_stops_at_the_first_quiet_slice():
    queue = WorkQueue(capacity=1000)
    queue.put(WorkItem("first", 1))
    started = time.monotonic()

    batch = queue.take(64, linger=5.0, linger_slice=0.05)

    assert [i.payload for i in batch] == ["first"]
    assert time.monotonic() - started < 1.0  # one quiet slice, not the whole linger


def test_lingering_stops_once_the_batch_is_full():
    queue = WorkQueue(capacity=1000)
    queue.put(WorkItem("first", 2))
    producer = _feed(queue, count=1, every=0.05, size=6)
    started = time.monotonic()

    batch = queue.take(8, linger=5.0, linger_slice=2.0)
    producer.join()

    assert [i.payload for i in batch] == ["first", "late0"]
    assert time.monotonic() - started < 1.5  # woken by the put that filled it


def test_lingering_never_exceeds_the_linger_time():
    queue = WorkQueue(capacity=10_000)
    queue.put(WorkItem("first", 1))
    stop = threading.Event()

    def flood() -> None:  # a new item every 10 ms, for longer than the linger
        while not stop.wait(0.01):
            queue.put(WorkItem("more", 1))

    producer = threading.Thread(target=flood)
    producer.start()
    started = time.monotonic()
    batch = queue.take(10_000, linger=0.2, linger_slice=0.05)
    waited = time.monotonic() - started
    stop.set()
    producer.join()

    assert 0.15 <= waited < 1.0
    assert len(batch) > 1


def test_a_control_item_ends_the_linger_and_still_runs_alone():
    queue = WorkQueue(capacity=1000)
    queue.put(WorkItem("a", 1))
    threading.Timer(0.05, lambda: queue.put(WorkItem("reset", 0, control=True))).start()
    started = time.monotonic()

    first = queue.take(64, linger=5.0, linger_slice=2.0)

    assert time.monotonic() - started < 1.5
    assert [i.payload for i in first] == ["a"]
    assert [i.payload for i in queue.take(64)] == ["reset"]


def test_close_ends_the_linger():
    queue = WorkQueue(capacity=1000)
    queue.put(WorkItem("a", 1))
    threading.Timer(0.05, queue.close).start()
    started = time.monotonic()

    assert [i.payload for i in queue.take(64, linger=5.0, linger_slice=2.0)] == ["a"]
    assert time.monotonic() - started < 1.5
    assert queue.take(64) == []
