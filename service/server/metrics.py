"""Prometheus metrics: gRPC server figures for every method (streams included) and per model.

`ServerMetrics` owns a private `CollectorRegistry` with

- the go-grpc-prometheus series operators know: ``grpc_server_started_total``,
  ``grpc_server_handled_total`` (with ``grpc_code`` spelled as go-grpc-prometheus spells
  it: ``OK``, ``NotFound``, ``InvalidArgument``, ...), ``grpc_server_msg_received_total``,
  ``grpc_server_msg_sent_total`` and the ``grpc_server_handling_seconds`` histogram,
  labelled ``grpc_type`` (unary, client_stream, server_stream, bidi_stream),
  ``grpc_service`` and ``grpc_method``, filled by the `interceptor`;
- per model (label ``model``): samples learned/inferred/skipped/rejected, the step, the
  micro-batch size and compute time histograms and the queue depth, fed by `ModelMetrics`;
- per layer (labels ``model``, ``layer``): weight norms and quality measures, read from
  each model's stats source when Prometheus scrapes (`ModelMetrics.set_stats_source`);
- ``hebbian_build_info`` (always 1; labels ``version``, ``python_version``,
  ``grpc_version``), to join versions onto other series;
- the standard ``process_*``, ``python_gc_*`` and ``python_info`` series.

No ``*_created`` series are exported (`prometheus_client.disable_created_metrics`): they
double the size of a scrape and nothing here reads them. `start_http_server` serves it
all on ``/metrics``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from typing import Any

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.model.quality import LayerStatsValues

_LOG = logging.getLogger(__name__)

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
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_COMPUTE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
)
# LayerStatsValues field -> (metric name, help)
_LAYER_GAUGES = {
    "kernel_norm": (
        "hebbian_layer_weight_norm",
        "Frobenius norm of the layer's feed-forward kernel.",
    ),
    "lateral_norm": (
        "hebbian_layer_lateral_norm",
        "Frobenius norm of the layer's lateral weights.",
    ),
    "orthonormality_error": (
        "hebbian_layer_orthonormality_error",
        "max |W W^T - I| over the units' weight vectors (0 = orthonormal basis).",
    ),
    "weight_drift_per_second": (
        "hebbian_layer_weight_drift_per_second",
        "Relative kernel change per second over about the last minute, "
        "||W_now - W_then|| / ||W_now|| / (now - then); 0 while nothing is learned.",
    ),
    "reconstruction_error": (
        "hebbian_layer_reconstruction_error",
        "Running share of the layer input not explained by its subspace, "
        "||x - W^T W x||^2 / ||x||^2.",
    ),
    "explained_variance": (
        "hebbian_layer_explained_variance",
        "1 - hebbian_layer_reconstruction_error.",
    ),
}
assert set(_LAYER_GAUGES) == {f.name for f in fields(LayerStatsValues)}

StatsSource = Callable[[], list[LayerStatsValues]]


class ServerMetrics:
    """All metrics of one server process, in a private registry.

    Args:
      registry: where to register; a new private `CollectorRegistry` when None.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.http_port = 0  # the bound port while the HTTP endpoint runs
        self._http: tuple[Any, threading.Thread] | None = None
        self._lock = threading.Lock()
        self._models: dict[str, ModelMetrics] = {}
        prometheus_client.disable_created_metrics()
        _register_build_info(self.registry)
        prometheus_client.ProcessCollector(registry=self.registry)
        prometheus_client.PlatformCollector(registry=self.registry)
        prometheus_client.GCCollector(registry=self.registry)
        self._grpc = _GrpcMetrics(self.registry)
        self._interceptor = _MetricsInterceptor(self._grpc)
        self._families = _ModelFamilies(self.registry)
        self._layer_stats = _LayerStatsCollector()
        self.registry.register(self._layer_stats)

    def interceptor(self) -> grpc.ServerInterceptor:
        """The server interceptor that records ``grpc_server_*`` for every call."""
        return self._interceptor

    def model(self, name: str) -> ModelMetrics:
        """The metrics of model `name`, created on first use."""
        with self._lock:
            metrics = self._models.get(name)
            if metrics is None:
                metrics = ModelMetrics(name, self._families, self._layer_stats)
                self._models[name] = metrics
            return metrics

    def remove_model(self, name: str) -> None:
        """Drop every series labelled with model `name` (after DeleteModel)."""
        with self._lock:
            metrics = self._models.pop(name, None)
        if metrics is not None:
            metrics.close()

    def start_http_server(self, host: str, port: int) -> None:
        """Serve the registry on ``http://host:port/metrics``; port 0 picks a free port."""
        if self._http is not None:
            raise RuntimeError(f"the metrics endpoint already runs on port {self.http_port}")
        server, thread = prometheus_client.start_http_server(
            int(port), addr=host, registry=self.registry
        )
        self._http = (server, thread)
        self.http_port = int(server.server_address[1])

    def stop_http_server(self) -> None:
        """Stop the HTTP endpoint, if it runs, and release its port."""
        if self._http is None:
            return
        server, thread = self._http
        self._http = None
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        self.http_port = 0


def _register_build_info(registry: CollectorRegistry) -> None:
    """``hebbian_build_info`` = 1, labelled with the service's, Python's and gRPC's versions."""
    try:
        version = importlib.metadata.version("hebbian-service")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        version = "unknown"
    info = Gauge(
        "hebbian_build_info",
        "Always 1; the labels say which versions of the service, Python and gRPC run.",
        ("version", "python_version", "grpc_version"), registry=registry,
    )
    info.labels(version, platform.python_version(), grpc.__version__).set(1)


class ModelMetrics:
    """The series of one model. Thread-safe; every call after `close` does nothing."""

    def __init__(self, name: str, families: _ModelFamilies, layer_stats: _LayerStatsCollector):
        self.name = name
        self._families = families
        self._layer_stats = layer_stats
        self._closed = False
        self._lock = threading.Lock()
        self._learned = families.learned.labels(name)
        self._inferred = families.inferred.labels(name)
        self._skipped = families.skipped.labels(name)
        self._step = families.step.labels(name)
        self._queue = families.queue.labels(name)
        self._skipped_ratio = families.skipped_ratio.labels(name)
        self._batch = families.batch.labels(name)
        self._compute = families.compute.labels(name)

    def observe_batch(
        self, size: int, learned: int, inferred: int, skipped: int, compute_seconds: float
    ) -> None:
        """Record one micro-batch: its size, what it did with the samples, its compute time.

        `learned` counts samples that updated the weights, `inferred` samples served
        without learning, `skipped` learning samples refused because their update would
        have made the weights non-finite.
        """
        if self._closed:
            return
        self._batch.observe(size)
        self._compute.observe(compute_seconds)
        if learned:  # each inc takes a lock: only the counters that move
            self._learned.inc(learned)
        if inferred:
            self._inferred.inc(inferred)
        if skipped:
            self._skipped.inc(skipped)

    def read_queue_depth(self, fn: Callable[[], int]) -> None:
        """Samples waiting in the model's queue: `fn()`, read on every scrape (nothing to
        do per batch)."""
        if not self._closed:
            self._queue.set_function(fn)

    def read_step(self, fn: Callable[[], int]) -> None:
        """The model's step (samples learned since initialisation): `fn()`, read on every
        scrape."""
        if not self._closed:
            self._step.set_function(fn)

    def set_skipped_fraction(self, fraction: float) -> None:
        """The share of the model's recent learning samples refused as non-finite."""
        if not self._closed:
            self._skipped_ratio.set(fraction)

    def reject(self, reason: str, samples: int) -> None:
        """Count a rejected request and its samples, e.g. reason "wrong_width", "non_finite"."""
        with self._lock:
            if self._closed:
                return
            self._families.rejected_requests.labels(self.name, reason).inc()
            self._families.rejected_samples.labels(self.name, reason).inc(samples)

    def set_stats_source(self, fn: StatsSource) -> None:
        """Read `fn()` (one `LayerStatsValues` per layer) on every scrape."""
        with self._lock:
            if not self._closed:
                self._layer_stats.set_source(self.name, fn)

    def close(self) -> None:
        """Remove every series of this model from the registry."""
        with self._lock:
            self._closed = True
            self._layer_stats.remove_source(self.name)
            self._families.remove(self.name)


class _ModelFamilies:
    """The labelled per-model metric families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry):
        model = ("model",)
        self.learned = Counter(
            "hebbian_samples_learned", "Samples applied with learning (weights updated).",
            model, registry=registry,
        )
        self.inferred = Counter(
            "hebbian_samples_inferred", "Samples served without learning (inference only).",
            model, registry=registry,
        )
        self.skipped = Counter(
            "hebbian_samples_skipped",
            "Learning samples not applied because the update would make a weight non-finite.",
            model, registry=registry,
        )
        self.rejected_samples = Counter(
            "hebbian_samples_rejected", "Samples in rejected requests, by reason.",
            (*model, "reason"), registry=registry,
        )
        self.rejected_requests = Counter(
            "hebbian_requests_rejected", "Rejected requests (or stream messages), by reason.",
            (*model, "reason"), registry=registry,
        )
        self.step = Gauge(
            "hebbian_model_step", "Samples learned by the model since initialisation.",
            model, registry=registry,
        )
        self.queue = Gauge(
            "hebbian_queue_depth_samples", "Samples waiting in the model's learner queue.",
            model, registry=registry,
        )
        self.skipped_ratio = Gauge(
            "hebbian_recent_skipped_ratio",
            "Share of the model's recent learning samples (the last 1000 at most) refused "
            "because their update would make a weight non-finite; above 0.5 the model "
            "refuses most updates.",
            model, registry=registry,
        )
        self.batch = Histogram(
            "hebbian_microbatch_samples", "Samples per micro-batch taken by the learner.",
            model, buckets=_BATCH_BUCKETS, registry=registry,
        )
        self.compute = Histogram(
            "hebbian_microbatch_compute_seconds", "Engine time per micro-batch.",
            model, buckets=_COMPUTE_BUCKETS, registry=registry,
        )

    def remove(self, name: str) -> None:
        """Remove every series of model `name`."""
        for family in (self.learned, self.inferred, self.skipped, self.step, self.queue,
                       self.skipped_ratio, self.batch, self.compute):
            family.remove(name)
        for family in (self.rejected_samples, self.rejected_requests):
            family.remove_by_labels({"model": name})


class _LayerStatsCollector(Collector):
    """Per-layer gauges read from each model's stats source at scrape time.

    Unknown (NaN) values are left out rather than exported as NaN; a source that
    fails is logged and skipped, so one model never breaks the scrape.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, StatsSource] = {}

    def set_source(self, model: str, fn: StatsSource) -> None:
        with self._lock:
            self._sources[model] = fn

    def remove_source(self, model: str) -> None:
        with self._lock:
            self._sources.pop(model, None)

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            field: GaugeMetricFamily(name, doc, labels=("model", "layer"))
            for field, (name, doc) in _LAYER_GAUGES.items()
        }

    def describe(self) -> Iterable[Metric]:
        return self._families().values()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        with self._lock:
            sources = sorted(self._sources.items())
        for model, fn in sources:
            try:
                stats = fn()
            except Exception:
                _LOG.warning("layer statistics of model %r unavailable", model, exc_info=True)
                continue
            for index, values in enumerate(stats):
                for field, family in families.items():
                    value = float(getattr(values, field))
                    if not math.isnan(value):
                        family.add_metric((model, str(index)), value)
        yield from families.values()


class _GrpcMetrics:
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


class _Call:
    """Bookkeeping of one RPC: counts its messages and records how it ended. The
    per-message counters are looked up once per call, not once per message."""

    def __init__(
        self, metrics: _GrpcMetrics, labels: tuple[str, str, str], context: grpc.ServicerContext
    ):
        self.metrics, self.labels, self.context = metrics, labels, context
        self.start = 0.0
        self.received = metrics.received.labels(*labels).inc
        self.sent = metrics.sent.labels(*labels).inc

    def begin(self) -> None:
        self.start = time.perf_counter()
        self.metrics.started.labels(*self.labels).inc()

    def end(self, failed: bool) -> None:
        code = _final_code(self.context, failed)
        self.metrics.handled.labels(*self.labels, GRPC_CODE_NAMES[code]).inc()
        self.metrics.handling.labels(*self.labels).observe(time.perf_counter() - self.start)


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


class _MetricsInterceptor(grpc.ServerInterceptor):
    """Wraps every method handler, whatever its arity, to record ``grpc_server_*``."""

    def __init__(self, metrics: _GrpcMetrics):
        self._metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        rpc_type = _RPC_TYPES[(handler.request_streaming, handler.response_streaming)]
        labels = (rpc_type, service, method)
        wrap = _wrap_stream_response if handler.response_streaming else _wrap_unary_response
        behavior = {
            "unary": handler.unary_unary,
            "client_stream": handler.stream_unary,
            "server_stream": handler.unary_stream,
            "bidi_stream": handler.stream_stream,
        }[rpc_type]
        factory = {
            "unary": grpc.unary_unary_rpc_method_handler,
            "client_stream": grpc.stream_unary_rpc_method_handler,
            "server_stream": grpc.unary_stream_rpc_method_handler,
            "bidi_stream": grpc.stream_stream_rpc_method_handler,
        }[rpc_type]
        return factory(
            wrap(behavior, self._metrics, labels, handler.request_streaming),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _request_argument(request: Any, call: _Call, streaming: bool) -> Any:
    if streaming:
        return _CountingIterator(iter(request), call)
    call.received()
    return request


def _wrap_unary_response(behavior, metrics, labels, request_streaming):
    def handle(request, context):
        call = _Call(metrics, labels, context)
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


def _wrap_stream_response(behavior, metrics, labels, request_streaming):
    def handle(request, context):
        # Everything happens inside the generator, so a call grpc never starts (cancelled
        # before its first message) is neither started nor handled. grpc closes the
        # generator when the client goes away: GeneratorExit lands in the except below.
        call = _Call(metrics, labels, context)
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
