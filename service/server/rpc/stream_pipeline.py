"""One `StreamProcess` call: each message applied as it arrives, answered in order.

Two ways, chosen by the server's durability (`read_ahead`):

- *Inline* (no write-ahead log, or one not fsynced per batch): the gRPC handler thread
  reads a message, submits it (applying it itself when the model is idle, or waiting
  for the holder, who applies it in its next batch) and yields its answer, like a plain
  echo handler: one thread per stream, no hand-off. Other streams' messages for the same
  model still combine with it.
- *Read-ahead* (fsync `always`): a *reader* thread parses each message and submits it at
  once, so that a stream keeps up to `STREAM_WINDOW` messages in flight (bounded in bytes
  as well) and group commit (one log write and one fsync per batch) has something to
  group. The handler thread takes the messages in order, waits for each one's answer (and
  becomes the holder itself if its message is still queued when the holder leaves) and
  yields it.

When the call ends early (the client cancelled or went away), every message not yet
begun is withdrawn, never applied. A bad message ends the stream with its status; the
messages before it stay answered and applied.
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
    read_ahead: bool = True,
) -> Iterator[pb.StreamProcessResponse]:
    """The answers of one stream, in order; `abort` ends the call for a refused message.
    `read_ahead`: keep a window of messages in flight (for group commit)."""
    if not read_ahead:
        return _answer_inline(messages, context, parser, abort)
    return _answer_read_ahead(messages, context, parser, abort)


def _answer_inline(messages, context, parser, abort) -> Iterator[pb.StreamProcessResponse]:
    current = _Current()
    if not context.add_callback(current.withdraw):  # the call has ended already
        return
    for message in messages:
        try:
            model, request = parser.parse(message)
            answer = model.apply_if_idle(request)
            if answer is None:  # queued behind the model's holder: withdrawn if the call ends
                pending = model.pending(request)
                current.set(model, pending)
                model.submit(pending)
                answer = model.wait(pending)
                current.clear()
        except DomainError as err:
            abort(context, err)
        yield pb.StreamProcessResponse(**answer_fields(message, model, answer))


class _Current:
    """The message an inline stream is applying: withdrawn if the call ends meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: tuple | None = None
        self._ended = False

    def set(self, model, pending) -> None:
        with self._lock:
            self._item = (model, pending)
            if self._ended:
                model.withdraw(pending)  # never applied: the call is over

    def clear(self) -> None:
        with self._lock:
            self._item = None

    def withdraw(self) -> None:
        with self._lock:
            self._ended = True
            item = self._item
        if item is not None:
            model, pending = item
            model.withdraw(pending)


def _answer_read_ahead(messages, context, parser, abort) -> Iterator[pb.StreamProcessResponse]:
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
            model, request = parser.parse(message)
            pending = model.pending(request)
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
