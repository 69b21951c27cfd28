"""A resumable stream's bookkeeping: the messages sent and not answered yet.

A `StreamProcess` call that breaks (the server restarted, the connection dropped) loses
the messages in flight: some were applied and logged before the break, some never
arrived. The stream helpers of both clients keep every message until its answer arrives
(`Outbox`) and, on a new call, send the unanswered ones again first, with the same
request ids, then carry on with the source. The server answers an id it already
acknowledged with its first answer and applies nothing twice, so each message is
applied exactly once and answered once, in order.

The outbox knows nothing of gRPC: a call's request iterator is `Outbox.requests(attempt)`,
and the reader of the call's answers hands each one to `Outbox.answer`. It is shared by
a gRPC thread that consumes the requests and the thread that reads the answers.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Message:
    """One stream message kept until it is answered: the request and whether its samples
    were one 1-D sample (the answer is then 1-D too)."""

    request: Any
    request_id: str
    single: bool


@dataclass
class Attempt:
    """One call of a resumable stream; `close` stops its request iterator."""

    start: int
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        """The call ended: its request iterator sends nothing more."""
        self.closed.set()


class StreamOutOfOrderError(RuntimeError):
    """An answer whose request id is not the one of the oldest unanswered message."""


class Ledger:
    """The messages of one stream in order: read from the source, not answered yet.

    Pure bookkeeping, no threads and no I/O: `Outbox` drives it from threads, the asyncio
    client from tasks. Message `index` counts from 0 over the whole stream.
    """

    def __init__(self, window: int | None = None):
        self.window = window
        self.pending: deque[Message] = deque()
        self.read = 0  # messages taken from the source
        self.answered = 0  # messages answered, always the oldest ones
        self.exhausted = False  # the source has ended (or failed)
        self.error: BaseException | None = None  # what the source raised

    def window_full(self) -> bool:
        """Whether `window` messages are waiting for their answers."""
        return bool(self.window) and self.read - self.answered >= self.window

    def add(self, message: Message) -> None:
        """A message read from the source, to be sent."""
        self.pending.append(message)
        self.read += 1

    def end(self, error: BaseException | None = None) -> None:
        """The source has no more messages (`error`: it raised that)."""
        self.exhausted = True
        self.error = error

    def at(self, index: int) -> Message:
        """The unanswered message number `index` (answered <= index < read)."""
        return self.pending[index - self.answered]

    def answer(self, request_id: str) -> Message:
        """Records the answer of the oldest unanswered message and returns that message.

        Raises:
          StreamOutOfOrderError: `request_id` is not that message's id.
        """
        if not self.pending:
            raise StreamOutOfOrderError(f"answer {request_id!r} to no message")
        message = self.pending[0]
        if request_id != message.request_id:
            raise StreamOutOfOrderError(
                f"answer {request_id!r} while {message.request_id!r} is the oldest unanswered"
            )
        self.pending.popleft()
        self.answered += 1
        return message

    def finish(self) -> None:
        """The call ended normally: raises the source's exception, or an error if messages
        were left unanswered."""
        if self.error is not None:
            raise self.error
        if self.pending:
            raise StreamOutOfOrderError(
                f"the stream ended with {len(self.pending)} message(s) unanswered"
            )


class Outbox:
    """A `Ledger` shared by gRPC's request thread and the thread reading the answers.

    Args:
      source: the stream's `Message`s (read lazily, one reader at a time).
      window: most messages sent and not answered (None: only gRPC flow control bounds
        them, and the outbox keeps as many).

    An exception raised by `source` (e.g. a bad line of a CSV file) ends the requests
    cleanly, so the server answers everything before it; `finish` raises it afterwards.
    """

    def __init__(self, source: Iterator[Message], window: int | None = None):
        self._source = source
        self._ledger = Ledger(window)
        self._state = threading.Condition()
        self._reading = threading.Lock()

    @property
    def answered(self) -> int:
        """Messages answered so far."""
        with self._state:
            return self._ledger.answered

    def attempt(self) -> Attempt:
        """A new call: it starts by resending every unanswered message."""
        with self._state:
            return Attempt(self._ledger.answered)

    def requests(self, attempt: Attempt) -> Iterator[Any]:
        """The requests of `attempt`: the unanswered messages, then new ones from the source."""
        ledger, index = self._ledger, attempt.start
        while not attempt.closed.is_set():
            with self._state:
                if index < ledger.answered:  # a later attempt already got past this one
                    return
                if index < ledger.read:
                    request = ledger.at(index).request
                elif ledger.exhausted:
                    return
                elif ledger.window_full():
                    self._state.wait(0.1)
                    continue
                else:
                    request = None
            if request is None:
                self._take_one()
                continue
            yield request
            index += 1

    def _take_one(self) -> None:
        """Reads one message from the source into the ledger (or marks its end)."""
        with self._reading:
            with self._state:
                if self._ledger.exhausted or self._ledger.window_full():
                    return  # another reader got there first
            error = message = None
            try:
                message = next(self._source)
            except StopIteration:
                pass
            except Exception as raised:  # re-raised by finish()
                error = raised
            with self._state:
                if message is None:
                    self._ledger.end(error)
                else:
                    self._ledger.add(message)
                self._state.notify_all()

    def answer(self, request_id: str) -> Message:
        """`Ledger.answer`, waking a request iterator waiting for room in the window."""
        with self._state:
            message = self._ledger.answer(request_id)
            self._state.notify_all()
            return message

    def finish(self) -> None:
        """`Ledger.finish`."""
        with self._state:
            self._ledger.finish()


RECONNECT_BACKOFF_S = 0.1  # first pause before a stream tries a new call, doubled up to
RECONNECT_MAX_BACKOFF_S = 2.0


class Reconnect:
    """When a resumable stream tries again: backoff between calls, a deadline without
    answers. `give_up(message)` makes the error raised past the deadline."""

    def __init__(self, timeout: float, give_up: Callable[[str], Exception]):
        self.timeout = timeout
        self.attempts = 0
        self._give_up = give_up
        self._last_answer = time.monotonic()

    def progress(self) -> None:
        """An answer arrived: the deadline starts again, the backoff too."""
        self._last_answer = time.monotonic()
        self.attempts = 0

    def remaining(self) -> float:
        """Seconds left before the deadline (<= 0: passed)."""
        return self.timeout - (time.monotonic() - self._last_answer)

    def backoff(self, reason: str) -> float:
        """Seconds to wait before the next call (0.1 s, doubling up to 2 s).

        Raises:
          the `give_up` error: the deadline has passed.
        """
        if self.remaining() <= 0:
            raise self.gave_up(reason)
        self.attempts += 1
        return min(RECONNECT_MAX_BACKOFF_S, RECONNECT_BACKOFF_S * 2 ** (self.attempts - 1))

    def gave_up(self, reason: str) -> Exception:
        """The error of a stream that could not be resumed, `reason` being the last failure."""
        return self._give_up(f"stream not resumed within {self.timeout:g} s: {reason}")


def resumable(code: object, details: str | None) -> bool:
    """Whether a stream that ended with status `code` may be resumed on a new call:
    UNAVAILABLE (the server restarted, the model is moving), or a CANCELLED the caller did
    not ask for, made from an HTTP/2 RST_STREAM: a proxy (HAProxy) resets the client's
    stream when the server ends it early with a status while the client still sends, and
    the status is lost on the way (resending with the same request ids is exactly once)."""
    import grpc

    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    return code == grpc.StatusCode.CANCELLED and "RST_STREAM" in (details or "")
