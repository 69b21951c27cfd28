"""`HebbianServer`: one running server, wired from a `ServerConfig`.

Owns the gRPC server (thread pool, message-size limits, metrics interceptor), the API
servicer, health, reflection, the Prometheus endpoint, the model registry and the
journal. Lifecycle: `start` builds the configured models, binds the ports and starts
serving (liveness SERVING); readiness turns SERVING once every startup model is warmed
up; `stop` turns readiness NOT_SERVING, stops accepting calls, gives in-flight calls a
grace period, then stops the learners, the journal and the metrics endpoint.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from grpc_reflection.v1alpha import reflection

from service.api import hebbian_pb2_grpc
from service.server.config import ConfigError, ServerConfig
from service.server.errors import ServiceError
from service.server.health import API_SERVICE, Health
from service.server.metrics import ServerMetrics
from service.server.registry import ModelRegistry
from service.server.servicer import HebbianServicer
from service.state import Journal, NullJournal

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The server could not start (e.g. a port is taken); the message is one line."""


class HebbianServer:
    """A configured server; `start` it, then `stop` it (or use it as a context manager).

    Args:
      config: the resolved configuration.
      journal: commit hook for every change; `NullJournal` (memory only) when None.
    """

    def __init__(self, config: ServerConfig, journal: Journal | None = None):
        self.config = config
        self.journal = journal if journal is not None else NullJournal()
        self.metrics = ServerMetrics()
        self.health = Health()
        self.registry = ModelRegistry(
            journal=self.journal,
            metrics=self.metrics,
            max_batch=config.limits.max_batch,
            max_queued_samples=config.limits.max_queued_samples,
            max_model_weights=config.limits.max_model_weights,
            default_model=config.default_model,
        )
        self.port = 0  # bound gRPC port once started
        self.ready = threading.Event()  # readiness SERVING
        self._stopping = threading.Event()
        self._readiness_lock = threading.Lock()
        size = config.limits.max_message_bytes
        self._server = grpc.server(
            futures.ThreadPoolExecutor(config.workers, thread_name_prefix="grpc-worker"),
            interceptors=[self.metrics.interceptor()],
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
            ],
            maximum_concurrent_rpcs=config.workers,
        )
        servicer = HebbianServicer(
            self.registry, config.limits.max_samples_per_request, config.limits.max_message_bytes
        )
        hebbian_pb2_grpc.add_HebbianServiceServicer_to_server(servicer, self._server)
        self.health.add_to_server(self._server)
        reflection.enable_server_reflection(
            (API_SERVICE, "grpc.health.v1.Health", reflection.SERVICE_NAME), self._server
        )

    @property
    def target(self) -> str:
        """host:port clients connect to."""
        return f"{_host(self.config.host)}:{self.port}"

    def start(self) -> HebbianServer:
        """Build the models, bind, serve; readiness follows once warm-up is done.

        Raises:
          ConfigError: a configured model is invalid.
          StartupError: a port could not be bound.
        """
        learners = []
        for name, spec in self.config.models.items():
            try:
                learners.append(self.registry.create(name, spec))
            except ServiceError as err:
                self.registry.close()
                raise ConfigError(err.message) from None
        address = f"{_host(self.config.host)}:{self.config.port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if not self.port:
            self.registry.close()
            raise StartupError(f"cannot listen on {address} (address in use or not local)")
        try:
            self.metrics.start_http_server(self.config.host, self.config.metrics_port)
        except OSError as err:
            self.registry.close()
            raise StartupError(
                f"cannot serve metrics on {self.config.host}:{self.config.metrics_port}: "
                f"{err.strerror or err}"
            ) from None
        self._server.start()
        threading.Thread(
            target=self._become_ready, args=(learners,), name="readiness", daemon=True
        ).start()
        log.info(
            "serving %s on %s, metrics on http://%s:%d/metrics, models: %s",
            API_SERVICE, self.target, _host(self.config.host), self.metrics.http_port,
            ", ".join(self.registry.names()),
        )
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until readiness is SERVING; False on timeout."""
        return self.ready.wait(timeout)

    def stop(self, grace: float | None = None) -> None:
        """Readiness NOT_SERVING, refuse new calls, let in-flight ones finish, release all."""
        grace = self.config.grace_period if grace is None else grace
        with self._readiness_lock:
            self._stopping.set()
            self.ready.clear()
            self.health.set_ready(False)
        log.info("shutting down: readiness NOT_SERVING, %.1fs grace for in-flight calls", grace)
        self._server.stop(grace).wait()
        self.health.shutdown()
        self.registry.close()
        self.journal.close()
        self.metrics.stop_http_server()
        log.info("stopped")

    def __enter__(self) -> HebbianServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _become_ready(self, learners) -> None:
        for learner in learners:
            learner.ready.wait()
        with self._readiness_lock:
            if self._stopping.is_set():
                return
            self.health.set_ready(True)
            self.ready.set()
        log.info("ready: %d model(s) warmed up", len(learners))


def _host(host: str) -> str:
    """`host` as it appears in an address, brackets around IPv6."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
