"""A stream's window of messages read ahead of their answers is bounded in bytes as
well as in messages: the reader waits once the window's samples fill it (one message
always fits), and a closed window never blocks the reader."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from service.server.servicer import _StreamWindow


def item(tag: str) -> tuple:
    return (tag, None, Future())


def put_in_thread(window: _StreamWindow, value, nbytes: int) -> threading.Thread:
    thread = threading.Thread(target=window.put, args=(value, nbytes), daemon=True)
    thread.start()
    return thread


def test_the_reader_waits_while_the_window_holds_its_bytes():
    window = _StreamWindow(64, max_bytes=100)
    window.put(item("a"), 60)
    second = put_in_thread(window, item("b"), 60)
    second.join(0.5)
    assert second.is_alive()  # 120 bytes would not fit
    assert window.get()[0] == "a"
    second.join(30)
    assert not second.is_alive() and window.get()[0] == "b"


def test_one_message_larger_than_the_window_always_fits():
    window = _StreamWindow(64, max_bytes=100)
    window.put(item("huge"), 10_000)
    assert window.get()[0] == "huge"


def test_the_window_is_still_bounded_in_messages():
    window = _StreamWindow(2, max_bytes=1 << 20)
    window.put(item("a"), 1)
    window.put(item("b"), 1)
    third = put_in_thread(window, item("c"), 1)
    third.join(0.5)
    assert third.is_alive()
    window.get()
    third.join(30)
    assert not third.is_alive()


def test_closing_unblocks_a_waiting_reader_and_withdraw_cancels_what_is_queued():
    window = _StreamWindow(64, max_bytes=10)
    first = item("a")
    window.put(first, 10)
    blocked = put_in_thread(window, item("b"), 10)
    window.withdraw()
    blocked.join(30)
    assert not blocked.is_alive() and first[2].cancelled()
    window.close()
    window.put("end", 0)  # never blocks once closed
