"""One `StreamProcess` call: messages read ahead and applied as they arrive, answered in
order.

Two threads per stream. The *reader* parses each message and submits it to its model at
once: when the model is idle the reader applies it itself, on its own thread (it is the
model's holder until the message is done); when another thread holds the model, the
message queues and goes into the holder's next batch, and the reader goes on reading. So
a stream keeps up to `STREAM_WINDOW` messages in flight (bounded in bytes as well), which
gives group commit (one log write and one fsync per batch) something to group. The
gRPC *handler* thread takes the messages in order, waits for each one's answer (and
becomes the holder itself if its message is still queued when the holder leaves) and
yields it. When the call ends early (the client cancelled or went away), every message
not yet begun is withdrawn, never applied. A bad message ends the stream with its status;
the messages before it stay answered and applied.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator

import grpc

from service.api import hebbian_pb2 as pb
from service.errors import DomainError, InternalError
from service.server.rpc.sample_requests import RequestParser, answer_fields
from service.thread_names import named_target

log = logging.getLogger(__name__)

# Messages of one stream read and submitted ahead of the answers being sent, and the
# sample bytes they may hold (one message always fits, however large).
STREAM_WINDOW = 64
STREAM_WINDOW_BYTES = 4 << 20
_END = object()


def answer_stream(
    messages: Iterator[pb.StreamProcessRequest],
    context: grpc.ServicerContext,
    parser: RequestParser,
    abort: Callable[[grpc.ServicerContext, DomainError], None],
) -> Iterator[pb.StreamProcessResponse]:
    """The answers of one stream, in order; `abort` ends the call for a refused message."""
    window = StreamWindow(STREAM_WINDOW, STREAM_WINDOW_BYTES)
    if not context.add_callback(window.withdraw):  # the call has ended already
        return
    reader = threading.Thread(target=named_target,
                              args=("stream-reader", _read, messages, parser, window),
                              daemon=True, name="stream-reader")
    reader.start()
    try:
        while (item := window.get()) is not _END:
            if isinstance(item, DomainError):
                abort(context, item)
            message, model, pending = item
            try:
                answer = model.wait(pending)
            except DomainError as err:
                abort(context, err)
            yield pb.StreamProcessResponse(**answer_fields(message, model, answer))
    finally:
        window.close()


def _read(messages: Iterator, parser: RequestParser, window: StreamWindow) -> None:
    """The reader thread of one stream: parse, queue in the window, submit."""
    try:
        for message in messages:
            if window.closed:
                return
            model, pending = parser.parse(message)
            window.put((message, model, pending), _message_bytes(message))
            if window.closed:  # withdrawn meanwhile: never submit it
                return
            model.submit(pending)
    except DomainError as err:
        window.put(err)
    except grpc.RpcError:  # the client went away; the handler ends with the call
        pass
    except Exception as err:
        log.exception("stream reader failed")
        window.put(InternalError(f"{type(err).__name__}: {err}"))
    finally:
        window.put(_END)


class StreamWindow:
    """The messages of one stream read and not answered yet, in order and bounded in count
    and bytes: the reader `put`s, the handler `get`s. `withdraw` (run when the call
    ends) withdraws every message its model has not begun, so that a cancelled stream's
    queued samples are never applied."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self._size, self._max_bytes = size, max_bytes
        self._items: deque[tuple[object, int]] = deque()
        self._bytes = 0
        self._changed = threading.Condition()
        self._awaited: tuple | None = None  # the message the handler waits for
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        """Whether the stream ended (the reader stops)."""
        return self._closed.is_set()

    def put(self, item, nbytes: int = 0) -> None:
        """Queue a (message, model, pending), an error or the end; waits while the window
        is full (in messages, or in bytes unless it is empty), never once it is closed."""
        with self._changed:
            while not self._closed.is_set() and self._items and (
                len(self._items) >= self._size or self._bytes + nbytes > self._max_bytes
            ):
                self._changed.wait()
            self._items.append((item, nbytes))
            self._bytes += nbytes
            self._changed.notify_all()

    def get(self):
        """The next item, in order (waits for one)."""
        with self._changed:
            while not self._items:
                self._changed.wait()
            item, nbytes = self._items.popleft()
            self._bytes -= nbytes
            self._changed.notify_all()
            if type(item) is tuple:
                self._awaited = item
        return item

    def withdraw(self) -> None:
        """Withdraw every message not begun, the awaited one too; stop the reader."""
        self._closed.set()
        with self._changed:
            queued = [item for item, _ in self._items if type(item) is tuple]
            self._changed.notify_all()
        for item in (self._awaited, *queued):
            if item is not None:
                _, model, pending = item
                model.withdraw(pending)

    def close(self) -> None:
        """The handler is done: stop the reader, unblocking it if it waits for room."""
        self._closed.set()
        with self._changed:
            self._items.clear()
            self._bytes = 0
            self._changed.notify_all()


def _message_bytes(message: pb.StreamProcessRequest) -> int:
    """Bytes a stream message holds in the window: its samples (raw or values) and id."""
    samples = message.samples
    return len(samples.raw) + 4 * len(samples.values) + len(message.request_id)
