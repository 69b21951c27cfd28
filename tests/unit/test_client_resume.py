"""The resumable stream's bookkeeping without gRPC: what a new call resends, in order."""

from __future__ import annotations

import itertools

import pytest

from service.client_resume import Ledger, Message, Outbox, StreamOutOfOrderError


def messages(n: int, fail_at: int | None = None):
    for index in range(n):
        if index == fail_at:
            raise ValueError(f"bad line {index}")
        yield Message(request=f"req-{index}", request_id=f"p:{index}", single=False)


def test_a_new_attempt_resends_the_unanswered_messages_then_goes_on_with_the_source():
    outbox = Outbox(messages(6), window=3)
    first = outbox.attempt()
    sent = list(itertools.islice(outbox.requests(first), 3))  # the window is full now
    assert sent == ["req-0", "req-1", "req-2"]
    outbox.answer("p:0")
    first.close()  # the call broke with p:1 and p:2 unanswered

    second = outbox.attempt()
    requests = outbox.requests(second)
    assert [next(requests), next(requests), next(requests)] == ["req-1", "req-2", "req-3"]
    for index in (1, 2, 3):
        outbox.answer(f"p:{index}")
    assert list(requests) == ["req-4", "req-5"]
    outbox.answer("p:4")
    outbox.answer("p:5")
    outbox.finish()
    assert outbox.answered == 6


def test_an_answer_out_of_order_is_refused():
    outbox = Outbox(messages(2))
    list(outbox.requests(outbox.attempt()))
    with pytest.raises(StreamOutOfOrderError, match="'p:1' while 'p:0'"):
        outbox.answer("p:1")


def test_a_source_error_ends_the_requests_and_is_raised_after_the_answers():
    outbox = Outbox(messages(5, fail_at=2))
    assert list(outbox.requests(outbox.attempt())) == ["req-0", "req-1"]
    outbox.answer("p:0")
    outbox.answer("p:1")
    with pytest.raises(ValueError, match="bad line 2"):
        outbox.finish()


def test_finishing_with_unanswered_messages_is_an_error():
    ledger = Ledger()
    ledger.add(Message("r", "p:0", False))
    ledger.end()
    with pytest.raises(StreamOutOfOrderError, match="1 message"):
        ledger.finish()
