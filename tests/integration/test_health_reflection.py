"""Health (overall, liveness, readiness), reflection and the metrics endpoint."""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from service.api import hebbian_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", ["", "liveness", "readiness", "hebbian.v1.HebbianService"])
def test_a_ready_server_is_serving_on_every_health_service(channel, service):
    stub = health_pb2_grpc.HealthStub(channel)

    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)

    assert response.status == SERVING


def test_reflection_lists_and_describes_the_service(channel):
    database = ProtoReflectionDescriptorDatabase(channel)

    services = set(database.get_services())
    described = database.FindFileContainingSymbol("hebbian.v1.HebbianService")

    assert {"hebbian.v1.HebbianService", "grpc.health.v1.Health"} <= services
    assert described.name == "hebbian/v1/hebbian.proto"
    methods = {m.name for m in described.service[0].method}
    assert {"Process", "StreamProcess", "CreateModel", "GetModel", "ListModels"} <= methods


def test_metrics_endpoint_counts_unary_and_stream_calls_and_model_figures(hebbian_server, stub):
    x = np.zeros((2, 16), np.float32)
    stub.Process(pb.ProcessRequest(samples=pb.Tensor(values=x.ravel())))
    list(stub.StreamProcess(iter([pb.StreamProcessRequest(samples=pb.Tensor(values=x[0]))])))

    url = f"http://127.0.0.1:{hebbian_server.metrics.http_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()

    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="Process"' in text
    assert 'grpc_method="StreamProcess"' in text
    assert 'model="default"' in text


def test_metrics_use_go_grpc_prometheus_codes_build_info_and_no_created_series(
    hebbian_server, stub
):
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetModel(pb.GetModelRequest(name="no-such-model"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    url = f"http://127.0.0.1:{hebbian_server.metrics.http_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()

    assert 'grpc_code="NotFound",grpc_method="GetModel"' in text
    assert "NOT_FOUND" not in text
    assert "hebbian_build_info{" in text
    assert "_created" not in text
