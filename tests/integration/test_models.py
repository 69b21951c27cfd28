"""Model management against a real server: Create, Get, List, Delete, Reset."""

from __future__ import annotations

import contextlib
import math

import grpc
import numpy as np
import pytest

from service.api import hebbian_pb2 as pb

CONFIG = pb.ModelConfig(
    input_dim=8,
    layers=[
        pb.LayerConfig(units=4, rule="sanger", learning_rate=0.005),
        pb.LayerConfig(units=2, rule="oja_subspace", lateral="anti_hebbian", seed=9),
    ],
)


def code_of(call, request) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    assert info.value.details()
    return info.value.code()


@pytest.fixture
def model(stub):
    response = stub.CreateModel(pb.CreateModelRequest(name="stack-8-4-2", config=CONFIG))
    yield response.model
    with contextlib.suppress(grpc.RpcError):  # some tests delete it themselves
        stub.DeleteModel(pb.DeleteModelRequest(name="stack-8-4-2"))


def test_create_reports_the_model_with_resolved_seeds_and_defaults(model):
    assert model.name == "stack-8-4-2" and model.step == 0 and not model.is_default
    assert model.config.input_dim == 8
    first, second = model.config.layers
    assert (first.units, first.rule, first.learning_rate) == (4, "sanger", pytest.approx(0.005))
    assert first.HasField("seed")  # drawn and reported
    assert (second.seed, second.lateral, second.rule) == (9, "anti_hebbian", "oja_subspace")
    assert first.granularity == "per_sample" and first.activation == "linear"
    assert len(model.layer_stats) == 2
    assert model.create_time.seconds > 0


def test_get_and_list_report_name_step_counters_and_layer_stats(stub, model):
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    stub.Process(pb.ProcessRequest(model=model.name, samples=pb.Tensor(values=x.ravel())))
    stub.Process(pb.ProcessRequest(model=model.name, samples=pb.Tensor(values=x[0]), learn=False))

    got = stub.GetModel(pb.GetModelRequest(name=model.name)).model
    listed = {m.name: m for m in stub.ListModels(pb.ListModelsRequest()).models}

    assert (got.step, got.samples_inferred, got.samples_skipped) == (50, 1, 0)
    assert got.config == model.config and got.create_time == model.create_time
    assert listed[model.name].step == 50
    assert listed["default"].is_default
    assert list(listed) == sorted(listed)
    stats = got.layer_stats[0]
    assert stats.kernel_norm > 0 and math.isfinite(stats.orthonormality_error)


def test_an_empty_name_means_the_default_model(stub):
    model = stub.GetModel(pb.GetModelRequest()).model

    assert model.name == "default" and model.is_default
    assert (model.config.input_dim, model.config.layers[0].units) == (16, 4)
    assert model.config.layers[0].rule == "sanger"


def test_create_refuses_duplicates_bad_names_and_bad_configs(stub, model):
    create = stub.CreateModel
    assert code_of(create, pb.CreateModelRequest(name=model.name, config=CONFIG)) == (
        grpc.StatusCode.ALREADY_EXISTS
    )
    for name in ("", "Upper", "-dash-first", "x" * 64, "sp ace"):
        request = pb.CreateModelRequest(name=name, config=CONFIG)
        assert code_of(create, request) == grpc.StatusCode.INVALID_ARGUMENT, name
    bad_configs = [
        pb.ModelConfig(),
        pb.ModelConfig(input_dim=4),
        pb.ModelConfig(input_dim=4, layers=[pb.LayerConfig(units=0)]),
        pb.ModelConfig(input_dim=4, layers=[pb.LayerConfig(units=2, rule="magic")]),
    ]
    for config in bad_configs:
        request = pb.CreateModelRequest(name="never-created", config=config)
        assert code_of(create, request) == grpc.StatusCode.INVALID_ARGUMENT, config
    huge = pb.ModelConfig(input_dim=10_000, layers=[pb.LayerConfig(units=5_000)])
    request = pb.CreateModelRequest(name="never-created", config=huge)
    assert code_of(create, request) == grpc.StatusCode.RESOURCE_EXHAUSTED
    names = [m.name for m in stub.ListModels(pb.ListModelsRequest()).models]
    assert "never-created" not in names


def test_delete_removes_the_model_and_protects_the_default(stub, model):
    stub.DeleteModel(pb.DeleteModelRequest(name=model.name))

    assert code_of(stub.GetModel, pb.GetModelRequest(name=model.name)) == grpc.StatusCode.NOT_FOUND
    assert code_of(stub.DeleteModel, pb.DeleteModelRequest(name=model.name)) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert code_of(stub.DeleteModel, pb.DeleteModelRequest(name="default")) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    sample = pb.Tensor(values=[0.0] * 8)
    request = pb.ProcessRequest(model=model.name, samples=sample)
    assert code_of(stub.Process, request) == grpc.StatusCode.NOT_FOUND


def test_reset_reinitialises_from_a_seed_and_step_goes_back_to_zero(stub, model):
    x = pb.Tensor(values=np.random.default_rng(1).normal(size=(20, 8)).ravel())
    probe = pb.Tensor(values=[1.0] * 8)
    fresh = stub.Process(pb.ProcessRequest(model=model.name, samples=probe, learn=False))
    stub.Process(pb.ProcessRequest(model=model.name, samples=x))
    seeds = [layer.seed for layer in model.config.layers]

    same = stub.Reset(pb.ResetRequest(name=model.name)).model
    after_same = stub.Process(pb.ProcessRequest(model=model.name, samples=probe, learn=False))
    reseeded = stub.Reset(pb.ResetRequest(name=model.name, seed=100)).model

    assert same.step == 0 and [layer.seed for layer in same.config.layers] == seeds
    assert list(after_same.activations.values) == list(fresh.activations.values)
    assert reseeded.step == 0
    assert [layer.seed for layer in reseeded.config.layers] == [100, 101]
    unknown = pb.ResetRequest(name="no-such-model")
    assert code_of(stub.Reset, unknown) == grpc.StatusCode.NOT_FOUND
