"""`HebbianServer`: one running server, wired from a `ServerConfig`.

Owns the gRPC server (thread pool, message-size limits, metrics interceptor), the API
servicer, health, reflection, the Prometheus endpoint, the data directory and the model
registry. Lifecycle: `start` locks the data directory, recovers the stored models
(newest snapshot + log replay), creates the configured ones that are new, binds the
ports and starts serving (liveness SERVING); readiness turns SERVING once every startup
model is warmed up, and is NOT_SERVING while a model's log finds no room on the disk;
`stop` turns readiness NOT_SERVING, stops accepting calls, gives in-flight calls a grace
period, then stops the models (each writes a final snapshot), releases the data
directory and the metrics endpoint. With a slot table (`config.slot_table`) the server
is one shard: it creates only the configured models it owns, and its
`OwnershipInterceptor` refuses requests for the others (service/sharding).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable

from service.api import hebbian_pb2_grpc
from service.errors import DomainError
from service.model.native_engine import configure_cache, default_cache_dir
from service.server.config import ConfigError, ServerConfig
from service.server.core.registry import ModelRegistry
from service.server.core.session import SnapshotSchedule
from service.server.observability.logs import json_logging
from service.server.observability.metrics import ServerMetrics
from service.server.observability.runtime_metrics import (
    DataDirCollector,
    MemoryLimitCollector,
    register_disk_full,
    register_readiness,
)
from service.server.rpc.servicer import HebbianServicer
from service.server.security import protection
from service.server.transport import reflection
from service.server.transport.grpc_server import grpc_server
from service.server.transport.health import API_SERVICE, Health
from service.server.transport.probes import HealthPort
from service.sharding.ownership import OwnershipInterceptor
from service.sharding.placement import ShardPlacement
from service.sharding.slot_table import SlotTableError, format_ranges
from service.sharding.table_watcher import SlotTableWatcher
from service.state.lock import DataDirLockedError
from service.state.log_reader import CorruptLogError
from service.state.snapshot import CorruptSnapshotError
from service.state.store import DataDir, Durability

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The server could not start (e.g. a port is taken); the message is one line."""


class HebbianServer:
    """A configured server; `start` it, then `stop` it (or use it as a context manager).

    Args:
      config: the resolved configuration.
      on_durability_failure: called when a write or fsync of a write-ahead log fails;
        the default ends the process at once (exit status 1), since nothing after
        such a failure may be acknowledged and a retry could hide lost data.
    """

    def __init__(
        self,
        config: ServerConfig,
        on_durability_failure: Callable[[BaseException], None] | None = None,
    ):
        self.config = config
        self.metrics = ServerMetrics()
        self.health = Health()
        self.data_dir = None
        if config.data_dir is not None:
            self.data_dir = DataDir(
                config.data_dir,
                Durability(config.fsync, config.wal_segment_bytes, config.snapshot_keep),
                on_failure=on_durability_failure or _exit_on_durability_failure,
            )
            self.metrics.registry.register(DataDirCollector(self.data_dir))
        self.registry = ModelRegistry(
            data_dir=self.data_dir,
            metrics=self.metrics,
            max_batch=config.limits.max_batch,
            max_queued_samples=config.limits.max_queued_samples,
            max_queued_bytes=config.limits.max_queued_bytes,
            max_model_weights=config.limits.max_model_weights,
            max_layers=config.limits.max_layers,
            max_model_cost=config.limits.max_model_cost,
            default_model=config.default_model,
            schedule=SnapshotSchedule(config.snapshot_every_samples, config.snapshot_every_seconds),
            max_models=config.limits.max_models,
        )
        self.port = 0  # bound gRPC port once started
        self.ready = threading.Event()  # readiness SERVING
        register_readiness(self.metrics.registry, self.ready)
        self.metrics.registry.register(MemoryLimitCollector())
        self._stopping = threading.Event()
        self._readiness_lock = threading.Lock()
        self._warm = False  # every startup model warmed up
        self.disk_full: list[str] = []  # models whose log refuses writes for lack of space
        register_disk_full(self.metrics.registry, lambda: bool(self.disk_full))
        self.placement = _placement(config)  # None: not sharded
        sharding = ([OwnershipInterceptor(self.placement, self.registry.transit)]
                    if self.placement else [])
        if self.placement is not None:
            self.placement.register_metrics(self.metrics.registry)
        self._server = grpc_server(  # the benchmark's echo server uses the same
            config, [self.metrics.interceptor(), *protection.interceptors(config), *sharding]
        )
        servicer = HebbianServicer(
            self.registry, config.limits.max_samples_per_request, config.limits.max_message_bytes,
            read_ahead=config.fsync_per_batch,
        )
        hebbian_pb2_grpc.add_HebbianServiceServicer_to_server(servicer, self._server)
        self.health.add_to_server(self._server)
        reflection.enable_reflection(
            (API_SERVICE, "grpc.health.v1.Health", reflection.SERVICE_NAME), self._server
        )
        self._credentials = protection.server_credentials(config)  # ConfigError: bad TLS files
        self._health_port = HealthPort(self.health) if config.health_port is not None else None

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
        _one_blas_thread()
        models = self._open_models()
        address = f"{_host(self.config.host)}:{self.config.port}"
        self.port = protection.bind(self._server, address, self._credentials)
        if not self.port:
            self._release()
            raise StartupError(f"cannot listen on {address} (address in use or not local)")
        if self._health_port is not None:
            health_address = f"{_host(self.config.host)}:{self.config.health_port}"
            if not self._health_port.start(health_address):
                self._release()
                raise StartupError(f"cannot listen on {health_address} for health checks")
        try:
            self.metrics.start_http_server(self.config.host, self.config.metrics_port)
        except OSError as err:
            self._release()
            raise StartupError(
                f"cannot serve metrics on {self.config.host}:{self.config.metrics_port}: "
                f"{err.strerror or err}"
            ) from None
        self._server.start()
        if self.placement is not None:
            self._log_placement()
        threading.Thread(
            target=self._become_ready, args=(models,), name="readiness", daemon=True
        ).start()
        if self.data_dir is not None:
            threading.Thread(target=self._watch_space, name="disk-space", daemon=True).start()
        log.info(
            "serving %s on %s, metrics on http://%s:%d/metrics, models: %s",
            API_SERVICE, self.target, _host(self.config.host), self.metrics.http_port,
            ", ".join(self.registry.names()),
        )
        for line in protection.posture(self.config):
            log.info("security: %s", line)
        for line in protection.warnings(self.config):
            log.warning("security: %s", line)
        if self.config.batch_linger:
            log.warning("batch_linger is retired and ignored: requests that queue behind the "
                        "one being applied form the next micro-batch without waiting")
        if self._health_port is not None:
            log.info("health checks only, plaintext, on %s:%d",
                     _host(self.config.host), self._health_port.port)
        return self

    def _log_placement(self) -> None:
        """Start following the slot table; say which slots this shard owns, and which of
        its stored models it holds but refuses (their slots belong to another shard)."""
        placement = self.placement
        placement.watcher.start()
        log.info("shard %d of slot table %s: slots %s", placement.shard, self.config.slot_table,
                 format_ranges(placement.table.ranges_of(placement.shard)))
        foreign = [name for name in self.registry.names() if not placement.owns(name)]
        if foreign:
            log.warning("stored model(s) %s belong to other shards by the slot table: kept, "
                        "but every request for them is refused", ", ".join(foreign))

    def _open_models(self) -> list:
        """Lock the data directory, recover the stored models, create the new ones."""
        if self.data_dir is not None:
            try:
                self.data_dir.open()
            except DataDirLockedError as err:
                raise StartupError(str(err)) from None
            except OSError as err:
                raise StartupError(
                    f"cannot use data directory {self.config.data_dir}: {err}"
                ) from None
            log.info("data directory %s, fsync %s", self.config.data_dir, self.config.fsync)
        else:
            log.warning("no data directory: models are kept in memory only and lost on exit")
        cache = self.config.engine_cache_dir or default_cache_dir()
        try:
            configure_cache(cache, self.config.engine_prebuilt_cache)
        except OSError as err:
            self._release()
            raise StartupError(f"cannot use engine cache directory {cache}: {err}") from None
        configured = self.config.models
        if self.placement is not None:  # each shard creates only the configured models it owns
            configured = {n: s for n, s in configured.items() if self.placement.owns(n)}
        try:
            return self.registry.open(configured)
        except DomainError as err:
            self._release()
            raise ConfigError(err.message) from None
        except (CorruptLogError, CorruptSnapshotError, ValueError, OSError) as err:
            self._release()
            raise StartupError(f"refusing to start: {err}") from None

    def _release(self) -> None:
        """Stop the models (final snapshots) and unlock the data directory."""
        self.registry.close()
        if self.data_dir is not None:
            self.data_dir.close()

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
        if self.placement is not None:
            self.placement.watcher.stop()
        self.health.shutdown()
        if self._health_port is not None:
            self._health_port.stop()
        self._release()
        self.metrics.stop_http_server()
        log.info("stopped")

    def __enter__(self) -> HebbianServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _become_ready(self, models) -> None:
        for model in models:
            model.ready.wait()
        self._warm = True
        self._update_readiness()
        log.info("ready: %d model(s) warmed up", len(models))

    def _update_readiness(self) -> None:
        """Readiness SERVING once warmed up, unless shutting down or a disk is full."""
        with self._readiness_lock:
            if self._stopping.is_set():
                return
            serving = self._warm and not self.disk_full
            self.health.set_ready(serving)
            if serving:
                self.ready.set()
            else:
                self.ready.clear()

    def _watch_space(self, interval: float = 1.0) -> None:
        """Each `interval`: which models' logs refuse writes for lack of space. While any
        does, readiness is NOT_SERVING and ``hebbian_disk_full`` is 1; reads are served and
        learning is refused with UNAVAILABLE, until the disk has room again."""
        while not self._stopping.wait(interval):
            full = [model.name for model in self.registry.list()
                    if model.store is not None and not model.store.wal.has_space()]
            if full == self.disk_full:
                continue
            if full:
                log.error("no space left for the log of model(s) %s: learning refused, reads "
                          "served, readiness NOT_SERVING until space is freed", ", ".join(full))
            else:
                log.info("space is back: learning accepted again")
            self.disk_full = full
            self._update_readiness()


def _placement(config: ServerConfig) -> ShardPlacement | None:
    """This server's shard of the configured slot table; None without one.

    Raises:
      ConfigError: the slot table cannot be read or is invalid.
    """
    if config.slot_table is None or config.shard is None:
        return None
    try:
        watcher = SlotTableWatcher(config.slot_table)
    except SlotTableError as err:
        raise ConfigError(str(err)) from None
    return ShardPlacement(config.shard, watcher, config.default_model)


def _host(host: str) -> str:
    """`host` as it appears in an address, brackets around IPv6."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _exit_on_durability_failure(err: BaseException) -> None:
    """End the process: a failed log write or fsync must never be retried or hidden. The
    log is poisoned already (nothing more is acknowledged); the exit waits a moment so
    that the caller of the failed write gets its UNAVAILABLE answer."""
    log.critical("write-ahead log failure, exiting: %s", err)
    if not json_logging():  # a JSON log holds only JSON lines; the record above says it
        print(f"hebbian serve: fatal: write-ahead log failure: {err}", file=sys.stderr,
              flush=True)
    threading.Timer(_EXIT_DELAY_S, os._exit, args=(1,)).start()


_EXIT_DELAY_S = 0.5


def _one_blas_thread() -> None:
    """Keep numpy's BLAS on one thread in the serving process (for the whole process).

    The server's only BLAS work is small (the quality measures, every 50 ms): with a BLAS
    thread pool, OpenBLAS's idle workers busy-wait for the next call, which keeps one core
    per worker busy for nothing, the cores that gRPC and the engine need.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
