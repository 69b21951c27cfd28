"""``grpc_server_*`` for every method, streams included, as go-grpc-prometheus names them.

`MetricsInterceptor` wraps every method handler, whatever its arity, and fills the
`GrpcMetrics` families: ``grpc_server_started_total``, ``grpc_server_handled_total``
(with ``grpc_code`` spelled as go-grpc-prometheus spells it: ``OK``, ``NotFound``,
``InvalidArgument``, ...), ``grpc_server_msg_received_total``,
``grpc_server_msg_sent_total`` and the ``grpc_server_handling_seconds`` histogram, labelled
``grpc_type`` (unary, client_stream, server_stream, bidi_stream), ``grpc_service`` and
``grpc_method``. Nothing here knows the Hebbian service.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.server.observability.histograms import cumulative_buckets

_GRPC_LABELS = ("grpc_type", "grpc_service", "grpc_method")
# grpc_code values as go-grpc-prometheus writes them (Go's codes.Code.String()), which the
# usual dashboards and alerts match on.
GRPC_CODE_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
assert set(GRPC_CODE_NAMES) == set(grpc.StatusCode)
_RPC_TYPES = {
    (False, False): "unary",
    (True, False): "client_stream",
    (False, True): "server_stream",
    (True, True): "bidi_stream",
}
# Prometheus' default buckets, extended for long-lived streams.
_HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class GrpcMetrics(Collector):
    """The go-grpc-prometheus server families, one `MethodTally` per method, read when
    Prometheus scrapes.

    Args:
      registry: where the families are registered.
    """

    def __init__(self, registry: CollectorRegistry):
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str, str], MethodTally] = {}
        registry.register(self)

    def tally(self, labels: tuple[str, str, str]) -> MethodTally:
        """The tally of one method (grpc_type, grpc_service, grpc_method), made on first use."""
        with self._lock:
            return self._tallies.setdefault(labels, MethodTally())

    @staticmethod
    def _families() -> tuple[Metric, ...]:
        return (
            CounterMetricFamily("grpc_server_started",
                                "Total number of RPCs started on the server.",
                                labels=_GRPC_LABELS),
            CounterMetricFamily("grpc_server_handled",
                                "Total number of RPCs completed on the server, regardless of "
                                "success or failure.", labels=(*_GRPC_LABELS, "grpc_code")),
            CounterMetricFamily("grpc_server_msg_received",
                                "Total number of RPC stream messages received on the server.",
                                labels=_GRPC_LABELS),
            CounterMetricFamily("grpc_server_msg_sent",
                                "Total number of gRPC stream messages sent by the server.",
                                labels=_GRPC_LABELS),
            HistogramMetricFamily("grpc_server_handling_seconds",
                                  "Histogram of response latency (seconds) of gRPC that had "
                                  "been application-level handled by the server.",
                                  labels=_GRPC_LABELS),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        started, handled, received, sent, handling = self._families()
        with self._lock:
            tallies = sorted(self._tallies.items())
        for labels, tally in tallies:
            with tally.lock:
                counts = (tally.started, tally.received, tally.sent)
                codes = sorted(tally.handled.items())
                buckets, seconds = list(tally.handling_buckets), tally.handling_sum
            for family, value in zip((started, received, sent), counts, strict=True):
                family.add_metric(labels, value)
            for code, value in codes:
                handled.add_metric((*labels, code), value)
            handling.add_metric(labels, cumulative_buckets(_HANDLING_BUCKETS, buckets), seconds)
        yield from (started, handled, received, sent, handling)


class MethodTally:
    """One method's counts: plain numbers under one lock (a prometheus_client series takes
    a lock and several Python calls per change, and a stream changes two per message).
    The message counts are added to in place: `with tally.lock: tally.received += 1`."""

    __slots__ = ("handled", "handling_buckets", "handling_sum", "lock", "received", "sent",
                 "started")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = self.received = self.sent = 0
        self.handled: dict[str, int] = {}  # grpc_code name -> calls
        self.handling_buckets = [0] * (len(_HANDLING_BUCKETS) + 1)  # the last one: +Inf
        self.handling_sum = 0.0

    def start(self, received: int) -> None:
        """Count a call that began, with the messages it received so far."""
        with self.lock:
            self.started += 1
            self.received += received

    def end(self, code: grpc.StatusCode, seconds: float, sent: int) -> None:
        """Count a call that ended with `code` after `seconds`, with `sent` more messages."""
        name = GRPC_CODE_NAMES[code]
        with self.lock:
            self.sent += sent
            self.handled[name] = self.handled.get(name, 0) + 1
            self.handling_buckets[bisect.bisect_left(_HANDLING_BUCKETS, seconds)] += 1
            self.handling_sum += seconds


class _Call:
    """Bookkeeping of one RPC: counts its messages and records how it ended."""

    __slots__ = ("context", "start", "tally")

    def __init__(self, tally: MethodTally, context: grpc.ServicerContext):
        self.tally, self.context = tally, context
        self.start = 0.0

    def begin(self, received: int = 0) -> None:
        self.start = time.perf_counter()
        self.tally.start(received)

    def end(self, failed: bool, sent: int = 0) -> None:
        self.tally.end(_final_code(self.context, failed), time.perf_counter() - self.start,
                       sent)


def _final_code(context: grpc.ServicerContext, failed: bool) -> grpc.StatusCode:
    """The status the client gets: an explicit code (abort, set_code) wins; then a
    cancelled call (by the client or its deadline); then UNKNOWN for an exception."""
    code = context.code()
    if code is not None:
        return code
    if not context.is_active():
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK


class _CountingIterator:
    """A request iterator that counts each message it hands over."""

    def __init__(self, requests: Iterator, call: _Call):
        self._requests = requests
        self._call = call

    def __iter__(self) -> _CountingIterator:
        return self

    def __next__(self) -> Any:
        request = next(self._requests)
        tally = self._call.tally
        with tally.lock:
            tally.received += 1
        return request


_FACTORIES = {
    "unary": grpc.unary_unary_rpc_method_handler,
    "client_stream": grpc.stream_unary_rpc_method_handler,
    "server_stream": grpc.unary_stream_rpc_method_handler,
    "bidi_stream": grpc.stream_stream_rpc_method_handler,
}


class MetricsInterceptor(grpc.ServerInterceptor):
    """Wraps every method handler, whatever its arity, to record ``grpc_server_*``.

    gRPC asks interceptors for a handler on every call; the wrapped handler of a method
    is kept and reused while the handler below stays the same object (the servicer's
    usually does; an interceptor below may hand out a fresh one per call)."""

    def __init__(self, metrics: GrpcMetrics):
        self._metrics = metrics
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, _, name = method.lstrip("/").rpartition("/")
        rpc_type = _RPC_TYPES[(handler.request_streaming, handler.response_streaming)]
        tally = self._metrics.tally((rpc_type, service, name))
        wrap = _wrap_stream_response if handler.response_streaming else _wrap_unary_response
        behavior = {
            "unary": handler.unary_unary,
            "client_stream": handler.stream_unary,
            "server_stream": handler.unary_stream,
            "bidi_stream": handler.stream_stream,
        }[rpc_type]
        return _FACTORIES[rpc_type](
            wrap(behavior, tally, handler.request_streaming),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _begin(call: _Call, request: Any, streaming: bool) -> Any:
    """Count the call as started (and its request, when unary); the request argument to
    hand to the method: a stream's requests counted as they are read."""
    if streaming:
        call.begin()
        return _CountingIterator(iter(request), call)
    call.begin(received=1)
    return request


def _wrap_unary_response(behavior, tally, request_streaming):
    def handle(request, context):
        call = _Call(tally, context)
        request = _begin(call, request, request_streaming)
        try:
            response = behavior(request, context)
        except BaseException:
            call.end(failed=True)
            raise
        call.end(failed=False, sent=int(response is not None))
        return response

    return handle


def _wrap_stream_response(behavior, tally, request_streaming):
    def handle(request, context):
        # Everything happens inside the generator, so a call grpc never starts (cancelled
        # before its first message) is neither started nor handled. grpc closes the
        # generator when the client goes away: GeneratorExit lands in the except below.
        call = _Call(tally, context)
        request = _begin(call, request, request_streaming)
        try:
            for response in behavior(request, context):
                with tally.lock:
                    tally.sent += 1
                yield response
        except BaseException:
            call.end(failed=True)
            raise
        call.end(failed=False)

    return handle
