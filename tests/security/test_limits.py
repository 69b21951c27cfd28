"""Limits with a clear status: number of models, open streams, deadlines, cancellation,
keepalive. All against `limited_server` (4 models, 4 streams, 16 workers)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.server.config import Limits, ServerConfig
from service.server.runtime import HebbianServer
from tests.security.conftest import MAX_MODELS, MAX_STREAMS, health, raw, running

SAMPLE = np.full((1, 16), 0.25, np.float32)
TINY = pb.ModelConfig(input_dim=2, layers=[pb.LayerConfig(units=1, rule="oja", seed=1)])


MODEL = "limits"  # a fresh model: the fuzzer may have left the default one's weights huge


@pytest.fixture(scope="module")
def stub(limited_channel) -> Iterator[pb_grpc.HebbianServiceStub]:
    stub = pb_grpc.HebbianServiceStub(limited_channel)
    config = pb.ModelConfig(input_dim=16, layers=[pb.LayerConfig(units=4, rule="sanger", seed=2)])
    stub.CreateModel(pb.CreateModelRequest(name=MODEL, config=config), timeout=60)
    yield stub
    stub.DeleteModel(pb.DeleteModelRequest(name=MODEL), timeout=60)


def one_sample() -> pb.ProcessRequest:
    return pb.ProcessRequest(model=MODEL, samples=raw(SAMPLE))


def step(stub, name: str = MODEL) -> int:
    return stub.GetModel(pb.GetModelRequest(name=name), timeout=10).model.step


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def every_stream_slot_is_free(stub) -> bool:
    """Whether `MAX_STREAMS` new streams all get a slot (the ended ones gave theirs back)."""
    streams = [open_when_free(stub, timeout=60) for _ in range(MAX_STREAMS)]
    return all(stream.close() == [] for stream in streams)


class OpenStream:
    """A StreamProcess call fed from a queue, kept open until `close` or `cancel`."""

    def __init__(self, stub, **kwargs):
        self.outbox: queue.Queue = queue.Queue()
        self.call = stub.StreamProcess(iter(self.outbox.get, None), timeout=60, **kwargs)

    def put(self, request_id: str = "") -> None:
        self.outbox.put(
            pb.StreamProcessRequest(model=MODEL, samples=raw(SAMPLE), request_id=request_id)
        )

    def send(self, request_id: str = "") -> pb.StreamProcessResponse:
        self.put(request_id)
        return next(self.call)

    def close(self) -> list:
        self.outbox.put(None)
        return list(self.call)

    def cancel(self) -> None:
        self.call.cancel()
        self.outbox.put(None)


def test_creating_more_models_than_the_cap_is_resource_exhausted(stub):
    held, created = len(stub.ListModels(pb.ListModelsRequest()).models), []
    try:
        for i in range(MAX_MODELS - held):
            name = f"cap-{i}"
            stub.CreateModel(pb.CreateModelRequest(name=name, config=TINY), timeout=60)
            created.append(name)
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateModel(pb.CreateModelRequest(name="cap-over", config=TINY), timeout=60)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"at most {MAX_MODELS} models" in info.value.details()
        assert len(stub.ListModels(pb.ListModelsRequest()).models) == MAX_MODELS

        stub.DeleteModel(pb.DeleteModelRequest(name=created.pop()), timeout=60)
        stub.CreateModel(pb.CreateModelRequest(name="cap-again", config=TINY), timeout=60)
        created.append("cap-again")  # deleting one made room again
    finally:
        for name in created:
            stub.DeleteModel(pb.DeleteModelRequest(name=name), timeout=60)


def test_a_model_over_the_weight_cap_is_resource_exhausted(stub):
    huge = pb.ModelConfig(input_dim=1 << 20, layers=[pb.LayerConfig(units=64)])
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateModel(pb.CreateModelRequest(name="huge", config=huge), timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "weights" in info.value.details()


def test_streams_beyond_the_cap_are_refused_and_unary_calls_still_served(stub):
    streams = [OpenStream(stub) for _ in range(MAX_STREAMS)]
    for i, stream in enumerate(streams):
        assert stream.send(f"cap-{i}").request_id == f"cap-{i}"  # each holds a slot now

    extra = OpenStream(stub)
    with pytest.raises(grpc.RpcError) as info:
        extra.send()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"at most {MAX_STREAMS}" in info.value.details()
    assert stub.GetModel(pb.GetModelRequest(), timeout=10).model.name == "default"

    streams[0].cancel()  # a cancelled stream gives its slot back
    replacement = open_when_free(stub)
    for stream in [*streams[1:], replacement]:
        assert stream.close() == []
    assert every_stream_slot_is_free(stub)


def open_when_free(stub, timeout: float = 10.0) -> OpenStream:
    """A new stream that got a slot (retried while the server still counts a closing one)."""
    deadline = time.monotonic() + timeout
    while True:
        stream = OpenStream(stub)
        try:
            stream.send()
            return stream
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline, "the cancelled stream never gave its slot back"
            time.sleep(0.05)


class StalledModel:
    """Fault injection: the model's holder waits on a gate (as if a disk stalled), so that
    requests stay queued; `release` lets it go on."""

    def __init__(self, server, name: str = MODEL):
        self.gate, entered = threading.Event(), threading.Event()
        self.model = server.registry.get(name)

        def stall(_):
            entered.set()
            self.gate.wait(60)

        self.holder = threading.Thread(target=self.model._control, args=(stall, None),
                                       daemon=True)
        self.holder.start()  # a control item holds the model's turn
        assert entered.wait(60)

    def release(self) -> None:
        self.gate.set()
        self.holder.join(60)

    def __enter__(self) -> StalledModel:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def test_a_request_whose_deadline_passes_while_queued_is_not_applied(limited_server, stub):
    before = step(stub)
    with StalledModel(limited_server):
        with pytest.raises(grpc.RpcError) as info:
            stub.Process(one_sample(), timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        patient = stub.Process.future(one_sample(), timeout=60)
        time.sleep(0.2)  # queued behind the expired one
    assert patient.result().step == before + 1  # only the request still wanted was applied
    assert step(stub) == before + 1


def cancel_while_stalled(server, stub, queued: int) -> None:
    """Stall the model, queue a unary call and a 3-message stream, cancel both: nothing
    of them is applied (`queued`: the items the stalled model holds before the cancel)."""
    before = step(stub)
    with StalledModel(server) as stalled:
        unary = stub.Process.future(one_sample(), timeout=60)
        stream = OpenStream(stub)
        for i in range(3):
            stream.put(str(i))
        assert eventually(lambda: stalled.model._combiner.depth == queued)
        unary.cancel()
        stream.cancel()
        time.sleep(0.2)
    later = stub.Process(one_sample(), timeout=30)
    assert later.step == before + 1
    assert every_stream_slot_is_free(stub)


def test_a_cancelled_call_withdraws_its_queued_samples(limited_server, stub):
    """Memory only: each stream's handler applies its own messages (inline), so the
    stalled model holds the unary call and the stream's first message."""
    cancel_while_stalled(limited_server, stub, queued=2)


@pytest.fixture(scope="module")
def read_ahead_server(tmp_path_factory) -> Iterator[HebbianServer]:
    """A server that fsyncs every batch: its streams read ahead, for group commit."""
    config = ServerConfig(port=0, metrics_port=0, data_dir=tmp_path_factory.mktemp("data"),
                          fsync="always", limits=Limits(max_streams=MAX_STREAMS))
    assert config.fsync_per_batch
    with running(config) as server:
        yield server


def test_a_cancelled_stream_withdraws_the_messages_it_read_ahead(read_ahead_server):
    """fsync always: the stream's reader submits all three messages while the model is
    stalled; the cancel withdraws every one."""
    with grpc.insecure_channel(read_ahead_server.target) as channel:
        stub = pb_grpc.HebbianServiceStub(channel)
        config = pb.ModelConfig(input_dim=16, layers=[pb.LayerConfig(units=4, rule="oja")])
        stub.CreateModel(pb.CreateModelRequest(name=MODEL, config=config), timeout=60)
        cancel_while_stalled(read_ahead_server, stub, queued=4)


def test_a_client_that_pings_too_often_is_sent_away(limited_server, limited_channel):
    options = [
        ("grpc.keepalive_time_ms", 200),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    with grpc.insecure_channel(limited_server.target, options=options) as channel:
        stream = OpenStream(pb_grpc.HebbianServiceStub(channel))
        stream.send()
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            next(stream.call)  # idle: only pings travel, far more often than allowed
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "ping" in info.value.details().lower()
        assert time.monotonic() - started < 30
    assert health(limited_channel, "readiness") == "SERVING"  # the server did not mind
