"""Prometheus metrics: gRPC server figures for every method (streams included) and per model.

`ServerMetrics` owns a private `CollectorRegistry` with

- the go-grpc-prometheus series operators know (``grpc_server_*``, `grpc_metrics`),
  filled by the `interceptor`;
- per model and per layer, the model's series (`model_metrics`), one `ModelMetrics`
  per model;
- ``hebbian_build_info`` (always 1; labels ``version``, ``python_version``,
  ``grpc_version``), to join versions onto other series;
- the standard ``process_*``, ``python_gc_*`` and ``python_info`` series.

No ``*_created`` series are exported (`prometheus_client.disable_created_metrics`): they
double the size of a scrape and nothing here reads them. `start_http_server` serves it
all on ``/metrics``.
"""

from __future__ import annotations

import importlib.metadata
import platform
import threading
from typing import Any

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Gauge

from service.server.observability.grpc_metrics import GrpcMetrics, MetricsInterceptor
from service.server.observability.model_metrics import (
    LayerStatsCollector,
    ModelFamilies,
    ModelMetrics,
)


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
        self._grpc = GrpcMetrics(self.registry)
        self._interceptor = MetricsInterceptor(self._grpc)
        self._families = ModelFamilies(self.registry)
        self._layer_stats = LayerStatsCollector()
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
