"""The clients' retry policy, against a real gRPC server that answers UNAVAILABLE at first.

The server implements three methods of `hebbian.v1.HebbianService` with a generic
handler: each call is counted, and the first `failures` calls of a method end with
UNAVAILABLE. gRPC's own retry policy (the channel's service config) must resend the
reads and Process, with the same request (Process: the same request id), and must not
resend CreateModel.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from concurrent import futures

import grpc
import pytest

from service.api import hebbian_pb2 as pb
from service.client import HebbianClient, HebbianError, ServerUnavailableError
from service.client_aio import AsyncHebbianClient
from service.client_retry import MAX_ATTEMPTS, SERVICE


class FlakyServer:
    """A gRPC server whose methods fail with UNAVAILABLE `failures` times, then answer."""

    def __init__(self, failures: int):
        self.failures = failures
        self.calls: dict[str, list] = defaultdict(list)
        self._server = grpc.server(futures.ThreadPoolExecutor(4))
        answers = {
            "GetModel": (pb.GetModelRequest, lambda r: pb.GetModelResponse(
                model=pb.Model(name=r.name or "default", step=7))),
            "CreateModel": (pb.CreateModelRequest, lambda r: pb.CreateModelResponse(
                model=pb.Model(name=r.name))),
            "Process": (pb.ProcessRequest, lambda r: pb.ProcessResponse(
                activations=r.samples, step=1, request_id=r.request_id, model="default")),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._handler(name, answer), request_deserializer=request.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )
            for name, (request, answer) in answers.items()
        }
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, handlers)]
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def _handler(self, name, answer):
        def handle(request, context):
            self.calls[name].append(request)
            if len(self.calls[name]) <= self.failures:
                context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
            return answer(request)

        return handle

    def __enter__(self) -> FlakyServer:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(None)


@pytest.fixture
def flaky():
    with FlakyServer(failures=MAX_ATTEMPTS - 1) as server:
        yield server


def test_reads_are_resent_on_unavailable_until_they_succeed(flaky):
    with HebbianClient(f"127.0.0.1:{flaky.port}", timeout=30) as client:
        model = client.get_model("m")

    assert (model.name, model.step) == ("m", 7)
    assert len(flaky.calls["GetModel"]) == MAX_ATTEMPTS


def test_process_is_resent_with_the_same_request_id(flaky):
    with HebbianClient(f"127.0.0.1:{flaky.port}", timeout=30) as client:
        result = client.process_full([1.0, 2.0])

    ids = {request.request_id for request in flaky.calls["Process"]}
    assert len(flaky.calls["Process"]) == MAX_ATTEMPTS
    assert ids == {result.request_id} and result.request_id
    assert result.activations.tolist() == [1.0, 2.0]


def test_create_model_is_not_resent(flaky):
    with (
        HebbianClient(f"127.0.0.1:{flaky.port}", timeout=30) as client,
        pytest.raises(HebbianError) as error,
    ):
        client.create_model("m", {"input_dim": 2, "layers": [{"units": 1}]})

    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(flaky.calls["CreateModel"]) == 1


def test_the_asyncio_client_has_the_same_retry_policy(flaky):
    async def scenario():
        async with AsyncHebbianClient(f"127.0.0.1:{flaky.port}", timeout=30) as client:
            return await client.predict_one([3.0])

    assert asyncio.run(scenario()).tolist() == [3.0]
    assert len(flaky.calls["Process"]) == MAX_ATTEMPTS


def test_a_server_that_stays_unavailable_fails_after_the_last_attempt():
    with (
        FlakyServer(failures=MAX_ATTEMPTS) as server,
        HebbianClient(f"127.0.0.1:{server.port}", timeout=30) as client,
        pytest.raises(ServerUnavailableError, match="restarting"),
    ):
        client.get_model()
    assert len(server.calls["GetModel"]) == MAX_ATTEMPTS
