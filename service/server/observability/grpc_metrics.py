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

import time
from collections.abc import Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

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


class GrpcMetrics:
    """The go-grpc-prometheus server families."""

    def __init__(self, registry: CollectorRegistry):
        self.started = Counter(
            "grpc_server_started", "Total number of RPCs started on the server.",
            _GRPC_LABELS, registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_GRPC_LABELS, "grpc_code"), registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received",
            "Total number of RPC stream messages received on the server.",
            _GRPC_LABELS, registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent", "Total number of gRPC stream messages sent by the server.",
            _GRPC_LABELS, registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            _GRPC_LABELS, buckets=_HANDLING_BUCKETS, registry=registry,
        )


class _MethodSeries:
    """One method's children of the families, looked up once (not once per call or per
    message: a `labels` lookup takes a lock and builds a key)."""

    def __init__(self, metrics: GrpcMetrics, labels: tuple[str, str, str]):
        self._metrics, self._labels = metrics, labels
        self.started = metrics.started.labels(*labels).inc
        self.received = metrics.received.labels(*labels).inc
        self.sent = metrics.sent.labels(*labels).inc
        self.handling = metrics.handling.labels(*labels).observe
        self._handled: dict[grpc.StatusCode, Any] = {}

    def handled(self, code: grpc.StatusCode) -> None:
        inc = self._handled.get(code)
        if inc is None:
            inc = self._metrics.handled.labels(*self._labels, GRPC_CODE_NAMES[code]).inc
            self._handled[code] = inc
        inc()


class _Call:
    """Bookkeeping of one RPC: counts its messages and records how it ended."""

    def __init__(self, series: _MethodSeries, context: grpc.ServicerContext):
        self.series, self.context = series, context
        self.start = 0.0
        self.received = series.received
        self.sent = series.sent

    def begin(self) -> None:
        self.start = time.perf_counter()
        self.series.started()

    def end(self, failed: bool) -> None:
        self.series.handled(_final_code(self.context, failed))
        self.series.handling(time.perf_counter() - self.start)


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
        self._call.received()
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
        self._series: dict[tuple[str, str, str], _MethodSeries] = {}

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
        labels = (rpc_type, service, name)
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = _MethodSeries(self._metrics, labels)
        wrap = _wrap_stream_response if handler.response_streaming else _wrap_unary_response
        behavior = {
            "unary": handler.unary_unary,
            "client_stream": handler.stream_unary,
            "server_stream": handler.unary_stream,
            "bidi_stream": handler.stream_stream,
        }[rpc_type]
        return _FACTORIES[rpc_type](
            wrap(behavior, series, handler.request_streaming),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _request_argument(request: Any, call: _Call, streaming: bool) -> Any:
    if streaming:
        return _CountingIterator(iter(request), call)
    call.received()
    return request


def _wrap_unary_response(behavior, series, request_streaming):
    def handle(request, context):
        call = _Call(series, context)
        call.begin()
        try:
            response = behavior(_request_argument(request, call, request_streaming), context)
        except BaseException:
            call.end(failed=True)
            raise
        if response is not None:
            call.sent()
        call.end(failed=False)
        return response

    return handle


def _wrap_stream_response(behavior, series, request_streaming):
    def handle(request, context):
        # Everything happens inside the generator, so a call grpc never starts (cancelled
        # before its first message) is neither started nor handled. grpc closes the
        # generator when the client goes away: GeneratorExit lands in the except below.
        call = _Call(series, context)
        call.begin()
        try:
            for response in behavior(_request_argument(request, call, request_streaming), context):
                call.sent()
                yield response
        except BaseException:
            call.end(failed=True)
            raise
        call.end(failed=False)

    return handle
