"""The combiner: the caller applies its own request, requests that queue behind a busy
holder form its next batches, in order; deadlines, cancellation, room and closing."""

from __future__ import annotations

import threading
import time

import pytest

from service.errors import CallCancelledError, DeadlinePassedError, InternalError, OverloadedError
from service.server.core.combining import Combiner, CombinerClosedError, Pending

WAIT = 60.0  # generous: nothing here may depend on the machine's speed


class Recorder:
    """An apply function that records its batches and the thread each ran on; it can be
    made to block (`gate`) so that the test controls what queues meanwhile."""

    def __init__(self):
        self.batches: list[list] = []
        self.threads: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch: list[Pending]) -> None:
        self.entered.set()
        assert self.gate.wait(WAIT)
        self.batches.append([item.payload for item in batch])
        self.threads.append(threading.current_thread().name)
        for item in batch:
            if item.payload == "boom":
                raise RuntimeError("boom")
            item.resolve(("done", item.payload))


def start(fn, *args, name=None) -> tuple[threading.Thread, dict]:
    """Run fn(*args) on a thread; its result or error lands in the returned dict."""
    out: dict = {}

    def run():
        try:
            out["result"] = fn(*args)
        except BaseException as err:
            out["error"] = err

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread, out


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_an_idle_model_is_applied_by_the_callers_own_thread():
    apply = Recorder()
    combiner = Combiner(apply, max_batch=64, capacity=1000)
    assert combiner.run(Pending("a", 1)) == ("done", "a")
    assert apply.threads == [threading.current_thread().name]


def test_requests_that_queue_behind_the_holder_form_its_next_batch_in_order():
    apply = Recorder()
    combiner = Combiner(apply, max_batch=64, capacity=1000)
    apply.gate.clear()
    first, first_out = start(combiner.run, Pending("first", 1), name="holder")
    assert apply.entered.wait(WAIT)
    waiters = []
    for index in range(5):  # they queue one after the other, in this order
        waiters.append(start(combiner.run, Pending(f"w{index}", 2), name=f"w{index}"))
        wait_until(lambda n=index: combiner.depth == 2 * (n + 1), "the request to queue")
    apply.gate.set()
    for thread, _ in [(first, first_out), *waiters]:
        thread.join(WAIT)
    assert first_out["result"] == ("done", "first")
    assert [out["result"] for _, out in waiters] == [("done", f"w{i}") for i in range(5)]
    # the holder's own batch, then everything queued behind it as one batch, in order
    assert apply.batches == [["first"], [f"w{i}" for i in range(5)]]
    assert combiner.depth == 0


def test_batches_hold_whole_requests_up_to_max_batch_and_control_items_run_alone():
    apply = Recorder()
    combiner = Combiner(apply, max_batch=5, capacity=1000)
    apply.gate.clear()
    holder, _ = start(combiner.run, Pending("h", 1))
    assert apply.entered.wait(WAIT)
    items = [Pending("a", 3), Pending("b", 2), Pending("c", 1), Pending("reset", control=True),
             Pending("d", 9), Pending("e", 1)]
    threads = []
    for item in items:
        threads.append(start(combiner.run, item)[0])
        wait_until(lambda item=item: item in combiner._queue, "the item to queue")
    apply.gate.set()
    for thread in [holder, *threads]:
        thread.join(WAIT)
    assert apply.batches == [["h"], ["a", "b"], ["c"], ["reset"], ["d"], ["e"]]


def test_a_request_whose_deadline_passes_while_queued_is_never_applied():
    withdrawn = []
    apply = Recorder()
    combiner = Combiner(apply, max_batch=64, capacity=1000, on_withdrawn=withdrawn.append)
    apply.gate.clear()
    holder, _ = start(combiner.run, Pending("h", 1))
    assert apply.entered.wait(WAIT)
    with pytest.raises(DeadlinePassedError, match="nothing was applied"):
        combiner.run(Pending("late", 4, deadline=time.monotonic() + 0.05))
    apply.gate.set()
    holder.join(WAIT)
    assert apply.batches == [["h"]]
    assert withdrawn == [4]
    assert combiner.run(Pending("next", 1)) == ("done", "next")  # still serving


def test_a_withdrawn_request_is_not_applied_and_its_caller_is_told():
    apply = Recorder()
    combiner = Combiner(apply, max_batch=64, capacity=1000)
    apply.gate.clear()
    holder, _ = start(combiner.run, Pending("h", 1))
    assert apply.entered.wait(WAIT)
    item = Pending("cancelled", 1)
    waiter, out = start(combiner.run, item)
    wait_until(lambda: combiner.depth == 1, "the request to queue")
    combiner.withdraw(item)
    waiter.join(WAIT)
    assert isinstance(out["error"], CallCancelledError)
    apply.gate.set()
    holder.join(WAIT)
    assert apply.batches == [["h"]]


def test_a_request_withdrawn_before_it_runs_is_dropped_by_the_holder():
    apply = Recorder()
    combiner = Combiner(apply, max_batch=64, capacity=1000)
    item = Pending("gone", 1)
    combiner.withdraw(item)  # the call ended between parsing and running
    with pytest.raises(CallCancelledError):
        combiner.run(item)
    assert apply.batches == []


def test_waiting_for_a_request_withdrawn_before_it_was_submitted_ends_at_once():
    apply = Recorder()
    combiner = Combiner(apply, max_batch=64, capacity=1000)
    item = Pending("never submitted", 1)
    combiner.withdraw(item)  # e.g. the stream was cancelled before its reader submitted it
    with pytest.raises(CallCancelledError):
        combiner.wait(item)
    combiner.submit(item)  # a late submit applies nothing
    assert apply.batches == []


def test_a_full_queue_makes_callers_wait_for_room_until_their_deadline():
    apply = Recorder()
    combiner = Combiner(apply, max_batch=64, capacity=4)
    apply.gate.clear()
    holder, _ = start(combiner.run, Pending("h", 1))
    assert apply.entered.wait(WAIT)
    queued, queued_out = start(combiner.run, Pending("fills", 4))
    wait_until(lambda: combiner.depth == 4, "the queue to fill")
    with pytest.raises(OverloadedError, match="overloaded"):
        combiner.run(Pending("no room", 1, deadline=time.monotonic() + 0.05))
    waiting, waiting_out = start(combiner.run, Pending("waits", 1))  # no deadline: it waits
    time.sleep(0.05)
    assert "result" not in waiting_out
    apply.gate.set()
    for thread in (holder, queued, waiting):
        thread.join(WAIT)
    assert queued_out["result"] == ("done", "fills")
    assert waiting_out["result"] == ("done", "waits")
    assert ["no room"] not in apply.batches


def test_a_failing_batch_fails_its_requests_and_the_combiner_keeps_serving():
    apply = Recorder()
    combiner = Combiner(apply, max_batch=64, capacity=1000)
    with pytest.raises(InternalError, match="boom"):
        combiner.run(Pending("boom", 1))
    assert combiner.run(Pending("after", 1)) == ("done", "after")


def test_closing_refuses_new_work_and_the_final_item_runs_after_the_queued_ones():
    apply = Recorder()
    combiner = Combiner(apply, max_batch=64, capacity=1000)
    apply.gate.clear()
    holder, _ = start(combiner.run, Pending("h", 1))
    assert apply.entered.wait(WAIT)
    queued, _ = start(combiner.run, Pending("queued", 1))
    wait_until(lambda: combiner.depth == 1, "the request to queue")
    combiner.close()
    with pytest.raises(CombinerClosedError):
        combiner.run(Pending("refused", 1))
    final, final_out = start(lambda: combiner.run(Pending("final", control=True), final=True))
    apply.gate.set()
    for thread in (holder, queued, final):
        thread.join(WAIT)
    assert final_out["result"] == ("done", "final")
    assert apply.batches == [["h"], ["queued"], ["final"]]


def test_many_threads_each_get_their_own_answers_and_everything_is_applied_once_in_order():
    applied: list[tuple[int, int]] = []

    def apply(batch: list[Pending]) -> None:
        for item in batch:
            applied.append(item.payload)
            item.resolve(item.payload)

    combiner = Combiner(apply, max_batch=16, capacity=64)
    answers: dict[int, list] = {t: [] for t in range(8)}

    def sensor(t: int) -> None:
        for i in range(300):
            answers[t].append(combiner.run(Pending((t, i), 1)))

    threads = [threading.Thread(target=sensor, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert all(answers[t] == [(t, i) for i in range(300)] for t in range(8))
    assert sorted(applied) == sorted((t, i) for t in range(8) for i in range(300))
    for t in range(8):  # each sensor's requests were applied in its order
        assert [i for s, i in applied if s == t] == list(range(300))


# -- run_if_idle: an idle model's request applied without a Pending ---------------------


def test_run_if_idle_runs_on_the_callers_thread_only_when_nothing_holds_or_waits():
    apply = Recorder()
    combiner = Combiner(apply, max_batch=64, capacity=1000)
    ran: list[str] = []

    def fn(arg):
        ran.append(threading.current_thread().name)
        return ("now", arg)

    assert combiner.run_if_idle(fn, "a") == (True, ("now", "a"))
    assert ran == [threading.current_thread().name]
    apply.gate.clear()  # a holder that stays busy
    holder, out = start(combiner.run, Pending("b", 1))
    assert apply.entered.wait(WAIT)
    assert combiner.run_if_idle(fn, "c") == (False, None)  # busy: nothing run
    apply.gate.set()
    holder.join(WAIT)
    assert out == {"result": ("done", "b")} and len(ran) == 1
    assert combiner.run_if_idle(fn, "d") == (True, ("now", "d"))  # idle again
    combiner.close()
    assert combiner.run_if_idle(fn, "e") == (False, None)
    assert len(ran) == 2


def test_work_queued_while_run_if_idle_runs_is_applied_after_it_in_order():
    apply = Recorder()
    combiner = Combiner(apply, max_batch=64, capacity=1000)
    inside, release = threading.Event(), threading.Event()
    waiting = Pending("waited", 1)
    queued = Pending("submitted", 1)

    def fn(arg):
        inside.set()
        assert release.wait(WAIT)
        return arg

    runner, out = start(combiner.run_if_idle, fn, "first")
    assert inside.wait(WAIT)
    combiner.submit(queued)  # queued behind the holder; its thread goes on without waiting
    assert not queued.done
    waiter, waited = start(combiner.run, waiting)
    wait_until(lambda: waiting._wake is not None, "the second request to wait")
    release.set()
    runner.join(WAIT)
    waiter.join(WAIT)
    assert out == {"result": (True, "first")}
    assert waited == {"result": ("done", "waited")}
    assert queued.outcome() == ("done", "submitted")
    assert [p for batch in apply.batches for p in batch] == ["submitted", "waited"]


def test_run_if_idle_releases_the_model_when_its_function_raises():
    combiner = Combiner(Recorder(), max_batch=64, capacity=1000)

    def fails(arg):
        raise RuntimeError(arg)

    with pytest.raises(RuntimeError, match="boom"):
        combiner.run_if_idle(fails, "boom")
    assert combiner.run(Pending("after", 1)) == ("done", "after")


def test_work_queued_with_nobody_waiting_is_applied_by_the_run_if_idle_thread():
    apply = Recorder()
    combiner = Combiner(apply, max_batch=64, capacity=1000)
    queued = Pending("submitted", 1)

    def fn(arg):
        combiner.submit(queued)  # e.g. a read-ahead stream's message, its thread gone on
        return arg

    assert combiner.run_if_idle(fn, "first") == (True, "first")
    assert queued.outcome() == ("done", "submitted")
    assert apply.threads == [threading.current_thread().name]
    assert combiner.run_if_idle(lambda arg: arg, "idle again") == (True, "idle again")
