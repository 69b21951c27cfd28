"""A shard refuses what it does not own (CreateModel included), names the owner, serves
what it owns, exports its shard in metrics, and follows a new slot table without restart."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.client import encode_samples
from service.server.config import ServerConfig
from service.server.runtime import HebbianServer
from service.sharding.slot_table import SlotTable
from service.sharding.slots import slot_of
from tests.sharding.names import names_per_shard

TABLE = SlotTable.even(2)  # the default model (slot 223) is on shard 0
NAMES = names_per_shard(TABLE, 2)
OWN, OTHER = NAMES[0], NAMES[1]
MODEL = {"input_dim": 4, "layers": [{"units": 2, "rule": "sanger", "seed": 0}]}
RELOAD_DEADLINE_S = 60


@pytest.fixture(scope="module")
def shard0(tmp_path_factory) -> Iterator[HebbianServer]:
    """Shard 0 of TABLE, in memory, configured with one owned and one foreign model."""
    path = tmp_path_factory.mktemp("table") / "slots.yaml"
    path.write_text(TABLE.to_yaml())
    config = ServerConfig(
        port=0, metrics_port=0, data_dir=None, slot_table=path, shard=0,
        models={"default": MODEL, OWN[0]: MODEL, OTHER[0]: MODEL},
    )
    server = HebbianServer(config).start()
    assert server.wait_ready(180)
    yield server
    server.stop(grace=1)


@pytest.fixture(scope="module")
def stub(shard0) -> Iterator[pb_grpc.HebbianServiceStub]:
    with grpc.insecure_channel(shard0.target) as channel:
        yield pb_grpc.HebbianServiceStub(channel)


def _refused(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value
    return caught.value


def test_only_owned_configured_models_are_created(stub):
    names = {model.name for model in stub.ListModels(pb.ListModelsRequest()).models}
    assert names == {"default", OWN[0]}


def test_every_model_method_refuses_a_foreign_model_naming_its_owner(stub):
    name = OTHER[1]
    error = _refused(stub.CreateModel, pb.CreateModelRequest(
        name=name, config=pb.ModelConfig(input_dim=4, layers=[pb.LayerConfig(units=2)])))
    assert error.details().startswith(
        f"model '{name}' (slot {slot_of(name)}) belongs to shard 1, this is shard 0")
    sample = encode_samples(np.zeros((1, 4), np.float32))
    _refused(stub.Process, pb.ProcessRequest(model=OTHER[0], samples=sample))
    for request in (pb.GetModelRequest, pb.DeleteModelRequest, pb.ResetRequest,
                    pb.SnapshotRequest, pb.ListSnapshotsRequest, pb.GetModelStateRequest):
        _refused(getattr(stub, request.__name__.removesuffix("Request")), request(name=name))
    _refused(stub.Restore, pb.RestoreRequest(name=name, snapshot_id="x"))
    _refused(stub.UpdateModel, pb.UpdateModelRequest(model=pb.Model(
        name=name, config=pb.ModelConfig(layers=[pb.LayerConfig(learning_rate=0.1)]))))


def test_owned_and_default_models_are_served(stub):
    sample = encode_samples(np.ones((2, 4), np.float32))
    assert stub.Process(pb.ProcessRequest(model=OWN[0], samples=sample)).model == OWN[0]
    assert stub.GetModel(pb.GetModelRequest(name="")).model.name == "default"
    created = stub.CreateModel(pb.CreateModelRequest(
        name=OWN[1], config=pb.ModelConfig(input_dim=4, layers=[pb.LayerConfig(units=2)])))
    assert created.model.name == OWN[1]


def test_a_stream_is_answered_up_to_the_first_foreign_message(stub):
    sample = encode_samples(np.ones((1, 4), np.float32))
    requests = [pb.StreamProcessRequest(model=m, samples=sample, request_id=f"s:{i}")
                for i, m in enumerate((OWN[0], OWN[0], OTHER[0], OWN[0]))]
    answered = []
    with pytest.raises(grpc.RpcError) as caught:
        for response in stub.StreamProcess(iter(requests)):
            answered.append(response.request_id)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "belongs to shard 1" in caught.value.details()
    assert answered == ["s:0", "s:1"]


def test_metrics_name_the_shard_and_its_slots(shard0):
    url = f"http://127.0.0.1:{shard0.metrics.http_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    assert 'hebbian_shard_info{shard="0"} 1.0' in text
    assert f'hebbian_shard_slots_owned{{shard="0"}} {TABLE.slot_count(0)}.0' in text
    assert 'grpc_code="FailedPrecondition"' in text


def test_a_new_table_is_followed_without_restart(shard0, stub):
    sample = encode_samples(np.ones((1, 4), np.float32))
    request = pb.ProcessRequest(model=OTHER[0], samples=sample, learn=False)
    _refused(stub.Process, request)
    shard0.config.slot_table.write_text("ranges: [{slots: 0-1023, shard: 0}]\n")
    deadline = time.monotonic() + RELOAD_DEADLINE_S
    while shard0.placement.table.slot_count(0) != 1024 and time.monotonic() < deadline:
        time.sleep(0.1)
    # owned now; the model was never created here, so the servicer answers NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        stub.Process(request)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    shard0.config.slot_table.write_text(TABLE.to_yaml())
