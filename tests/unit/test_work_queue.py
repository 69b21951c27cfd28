"""The learner's queue: whole requests in order, micro-batches up to a limit, back-pressure."""

from __future__ import annotations

import threading

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
