"""Servers for the security tests: an in-process server with tight limits for fuzzing
and limit checks, throw-away certificates, and helpers shared by the modules."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api import hebbian_pb2 as pb
from service.server.config import Limits, ServerConfig
from service.server.runtime import HebbianServer
from tests.security.certs import Pki, make_pki

# Limits of `limited_server`, small so that the fuzzer reaches them cheaply.
MAX_SAMPLES = 64
MAX_MESSAGE_BYTES = 64 * 1024
MAX_MODELS = 4
MAX_STREAMS = 4
WORKERS = 16


def raw(x: np.ndarray) -> pb.Tensor:
    """A float32 array as a raw Tensor with its shape."""
    x = np.asarray(x, np.float32)
    return pb.Tensor(shape=x.shape, raw=np.ascontiguousarray(x, "<f4").tobytes())


def rows(tensor: pb.Tensor) -> np.ndarray:
    """A Tensor's values as a float32 array of its shape."""
    data = np.frombuffer(tensor.raw, "<f4") if tensor.raw else np.array(tensor.values, np.float32)
    return data.reshape(tuple(tensor.shape))


def health(channel: grpc.Channel, service: str = "", timeout: float = 5.0, **kwargs) -> str:
    """grpc.health.v1 Check of `service` on `channel`: the status name or the error code's."""
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout, **kwargs
        )
    except grpc.RpcError as err:
        return err.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


@contextlib.contextmanager
def running(config: ServerConfig, ready_timeout: float = 180) -> Iterator[HebbianServer]:
    """An in-process server from `config`, readiness SERVING; stopped on exit."""
    server = HebbianServer(config).start()
    try:
        assert server.wait_ready(ready_timeout), "server not ready"
        yield server
    finally:
        server.stop(grace=1)


class LogRecords(logging.Handler):
    """Every log record of the `service` loggers while installed (for "never logged")."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @contextlib.contextmanager
    def installed(self) -> Iterator[LogRecords]:
        logger = logging.getLogger("service")
        level = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.setLevel(level)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """A fresh CA with server, client and rogue client certificates."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def limited_server() -> Iterator[HebbianServer]:
    """Plaintext, no auth, memory only, tight limits: the fuzzing and limits target."""
    config = ServerConfig(
        port=0,
        metrics_port=0,
        data_dir=None,
        workers=WORKERS,
        limits=Limits(
            max_samples_per_request=MAX_SAMPLES,
            max_message_bytes=MAX_MESSAGE_BYTES,
            max_models=MAX_MODELS,
            max_streams=MAX_STREAMS,
        ),
    )
    with running(config) as server:
        yield server


@pytest.fixture(scope="session")
def limited_channel(limited_server) -> Iterator[grpc.Channel]:
    """A plaintext channel to `limited_server`."""
    with grpc.insecure_channel(limited_server.target) as channel:
        yield channel
