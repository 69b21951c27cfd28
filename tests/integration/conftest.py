"""One in-process `HebbianServer` on a free local port, shared by the integration tests.

Tests that change a model's state create their own model (`make_model`), so they do
not depend on each other's order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import grpc
import pytest

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.codec.configs import config_to_proto
from service.model import StackConfig
from service.server.config import Limits, ServerConfig
from service.server.runtime import HebbianServer

MAX_SAMPLES = 4096
MAX_MESSAGE_BYTES = 1 << 20


@pytest.fixture(scope="session")
def hebbian_server(tmp_path_factory) -> Iterator[HebbianServer]:
    """A running server with the embedded default model and a fresh data directory,
    readiness SERVING."""
    config = ServerConfig(
        port=0,
        metrics_port=0,
        data_dir=tmp_path_factory.mktemp("data"),
        limits=Limits(max_samples_per_request=MAX_SAMPLES, max_message_bytes=MAX_MESSAGE_BYTES),
    )
    server = HebbianServer(config).start()
    assert server.wait_ready(180), "server not ready"
    yield server
    server.stop(grace=2)


@pytest.fixture(scope="session")
def channel(hebbian_server) -> Iterator[grpc.Channel]:
    """A channel to the shared server."""
    with grpc.insecure_channel(hebbian_server.target) as channel:
        yield channel


@pytest.fixture(scope="session")
def stub(channel) -> pb_grpc.HebbianServiceStub:
    """The API stub on the shared server."""
    return pb_grpc.HebbianServiceStub(channel)


@pytest.fixture
def make_model(stub, request) -> Iterator[Callable[..., str]]:
    """`make_model(input_dim, units, rule=..., **layer)` creates a model named after the
    test (deleted afterwards) and returns its name."""
    created = []

    def make(input_dim: int = 6, units: int = 3, **layer) -> str:
        base = re.sub(r"[^a-z0-9_-]+", "-", request.node.name.lower()).strip("-")[:50]
        name = f"{base}-{len(created)}"
        layer = {"units": units, "rule": "sanger", "learning_rate": 0.01, "seed": 1, **layer}
        config = StackConfig(input_dim, (layer,))
        stub.CreateModel(pb.CreateModelRequest(name=name, config=config_to_proto(config)))
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            stub.DeleteModel(pb.DeleteModelRequest(name=name))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
