"""Connection and stream limits of the gRPC server: concurrent streams and keepalive.

Each open stream holds one worker thread of the server's pool for its whole life, and
the pool refuses calls beyond `workers` with RESOURCE_EXHAUSTED (`maximum_concurrent_rpcs`,
never a queue). `StreamLimiter` caps the sensor streams (`StreamProcess`) below that,
so that streams can never take every thread and unary calls (GetModel, Process,
health on the main port) always find one: a stream beyond `max_streams` is refused
at once with RESOURCE_EXHAUSTED, before it reads a message, and its slot is free again
the moment a stream ends, fails or is cancelled.

`keepalive_options` are the HTTP/2 keepalive settings: the server pings idle
connections to find dead peers (a vanished sensor frees its stream), and refuses
clients that ping more often than allowed (GOAWAY "too_many_pings" after two strikes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from service.server.transport.health import API_SERVICE

STREAM_PROCESS = f"/{API_SERVICE}/StreamProcess"


class StreamLimiter(grpc.ServerInterceptor):
    """Refuses a `StreamProcess` call beyond `max_streams` open ones with RESOURCE_EXHAUSTED.

    Args:
      max_streams: most streams open at once.
    """

    def __init__(self, max_streams: int):
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1; got {max_streams}")
        self.max_streams = max_streams
        self._lock = threading.Lock()
        self._open = 0

    @property
    def open_streams(self) -> int:
        """Streams holding a slot now."""
        return self._open

    def intercept_service(self, continuation, handler_call_details):
        """Wrap `StreamProcess` so that it takes a slot for its lifetime."""
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method != STREAM_PROCESS:
            return handler
        behavior = handler.stream_stream

        def limited(requests: Iterator, context: grpc.ServicerContext) -> Iterator:
            if not self._take():
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"too many open streams: this server serves at most {self.max_streams} "
                    "at once; retry later or send over an open stream",
                )
            # the slot goes back when the call ends, however it ends; a callback rather
            # than a generator around the stream's, which would run once per message
            if not context.add_callback(self._give_back):
                self._give_back()  # the call has ended already
            return behavior(requests, context)

        return grpc.stream_stream_rpc_method_handler(
            limited,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _take(self) -> bool:
        with self._lock:
            if self._open >= self.max_streams:
                return False
            self._open += 1
            return True

    def _give_back(self) -> None:
        with self._lock:
            self._open -= 1


def keepalive_options(
    keepalive_time: float, keepalive_timeout: float, min_ping_interval: float
) -> list[tuple[str, int]]:
    """gRPC server channel arguments for keepalive, times in seconds.

    Args:
      keepalive_time: the server pings a connection idle this long.
      keepalive_timeout: a ping unanswered this long closes the connection.
      min_ping_interval: clients may ping at most this often (also without calls);
        pinging faster counts a strike, two strikes end the connection.
    """
    return [
        ("grpc.keepalive_time_ms", round(keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", round(keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", round(min_ping_interval * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
    ]
