"""Weights out and in, and hyper-parameter updates, against a real server over a socket:
GetModelState (no snapshot written), CreateModel with layers (validated like any input),
UpdateModel (state kept; only rate and schedule settings), and a model that refuses most
updates (GetModel fields, the metric, one warning)."""

from __future__ import annotations

import logging
import urllib.request

import grpc
import numpy as np
import pytest
from google.protobuf import field_mask_pb2

from service.api import hebbian_pb2 as pb
from service.client import decode_tensor, encode_samples

RNG = np.random.default_rng(3)
X = RNG.normal(size=(40, 6)).astype(np.float32)


def states_of(response) -> list[dict[str, np.ndarray]]:
    return [{field: decode_tensor(getattr(layer, field))
             for field in ("kernel", "lateral", "mask", "theta")} | {"step": layer.step}
            for layer in response.layers]


def refused(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return info.value


def test_get_model_state_returns_every_layer_and_writes_no_snapshot(stub, make_model):
    name = make_model(6, 3, lateral="anti_hebbian")
    stub.Process(pb.ProcessRequest(model=name, samples=encode_samples(X)))

    state = stub.GetModelState(pb.GetModelStateRequest(name=name))

    assert (state.name, state.step) == (name, 40)
    assert state.config == stub.GetModel(pb.GetModelRequest(name=name)).model.config
    (layer,) = states_of(state)
    assert layer["kernel"].shape == (6, 3) and layer["lateral"].shape == (3, 3)
    assert layer["step"] == 40 and np.all(np.diagonal(layer["lateral"]) == 0)
    assert not stub.ListSnapshots(pb.ListSnapshotsRequest(name=name)).snapshots
    assert not stub.GetModel(pb.GetModelRequest(name=name)).model.HasField("last_snapshot")


def test_a_model_created_from_an_exported_state_answers_and_learns_like_the_original(
        stub, make_model):
    source = make_model(6, 3)
    stub.Process(pb.ProcessRequest(model=source, samples=encode_samples(X)))
    state = stub.GetModelState(pb.GetModelStateRequest(name=source))
    copy = f"{source}-copy"

    created = stub.CreateModel(pb.CreateModelRequest(name=copy, config=state.config,
                                                     layers=state.layers)).model
    try:
        assert created.step == 40 and created.config == state.config
        again = states_of(stub.GetModelState(pb.GetModelStateRequest(name=copy)))
        for ours, theirs in zip(again, states_of(state), strict=True):
            for field in ("kernel", "lateral", "mask", "theta"):
                np.testing.assert_array_equal(ours[field], theirs[field])
        more = RNG.normal(size=(10, 6)).astype(np.float32)
        a = stub.Process(pb.ProcessRequest(model=source, samples=encode_samples(more)))
        b = stub.Process(pb.ProcessRequest(model=copy, samples=encode_samples(more)))
        np.testing.assert_array_equal(decode_tensor(a.activations), decode_tensor(b.activations))
        assert a.step == b.step == 50
    finally:
        stub.DeleteModel(pb.DeleteModelRequest(name=copy))


def bad_states(state: pb.GetModelStateResponse) -> dict[str, tuple[list, str]]:
    """Ways to spoil an exported state: (layers, the words the refusal must contain)."""
    def spoiled(field: str, change) -> list:
        layers = [pb.LayerState() for _ in state.layers]
        for layer, original in zip(layers, state.layers, strict=True):
            layer.CopyFrom(original)
        array = decode_tensor(getattr(layers[0], field)).copy()
        change(array)
        getattr(layers[0], field).CopyFrom(pb.Tensor(shape=array.shape, values=array.ravel()))
        return layers

    def wrong_shape() -> list:
        layers = spoiled("kernel", lambda a: None)
        layers[0].kernel.CopyFrom(pb.Tensor(shape=[3, 6], values=[0.0] * 18))
        return layers

    def diagonal(a):
        a[1, 1] = 0.5

    def nan(a):
        a[0, 0] = np.nan

    def mask_two(a):
        a[0, 0] = 2.0

    def mask_zero(a):
        a[0, 0] = 0.0

    def negative_step() -> list:
        layers = spoiled("kernel", lambda a: None)
        layers[0].step = -1
        return layers

    return {
        "wrong_shape": (wrong_shape(), "layer0.kernel is [3, 6]"),
        "nan": (spoiled("kernel", nan), "NaN or Inf"),
        "lateral_diagonal": (spoiled("lateral", diagonal), "non-zero diagonal"),
        "mask_not_binary": (spoiled("mask", mask_two), "other than 0 and 1"),
        "mask_for_connectivity_all": (spoiled("mask", mask_zero), "connectivity 'all'"),
        "negative_step": (negative_step(), "steps are >= 0"),
        "too_many_layers": ([*state.layers, state.layers[0]], "the config has 1 layer"),
    }


@pytest.mark.parametrize("case", sorted(bad_states(pb.GetModelStateResponse(
    layers=[pb.LayerState(kernel=pb.Tensor(shape=[6, 3], values=[0.1] * 18),
                          lateral=pb.Tensor(shape=[3, 3], values=[0.0] * 9),
                          mask=pb.Tensor(shape=[6, 3], values=[1.0] * 18),
                          theta=pb.Tensor(shape=[3], values=[0.0] * 3))]))))
def test_create_from_a_bad_state_is_invalid_argument_and_creates_nothing(stub, make_model,
                                                                         case):
    source = make_model(6, 3)
    state = stub.GetModelState(pb.GetModelStateRequest(name=source))
    layers, words = bad_states(state)[case]
    name = f"{source}-bad"

    error = refused(stub.CreateModel, pb.CreateModelRequest(name=name, config=state.config,
                                                            layers=layers))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in error.details()
    names = [m.name for m in stub.ListModels(pb.ListModelsRequest()).models]
    assert name not in names


def update(stub, name: str, paths: list[str] | None, *layers: pb.LayerConfig):
    request = pb.UpdateModelRequest(model=pb.Model(name=name, config=pb.ModelConfig(
        layers=list(layers))))
    if paths is not None:
        request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
    return stub.UpdateModel(request).model


def test_update_changes_the_learning_rate_and_keeps_the_learned_state(stub, make_model):
    name = make_model(6, 3)
    stub.Process(pb.ProcessRequest(model=name, samples=encode_samples(X)))
    before = states_of(stub.GetModelState(pb.GetModelStateRequest(name=name)))

    model = update(stub, name, ["config.layers.learning_rate", "config.layers.decay_steps"],
                   pb.LayerConfig(learning_rate=0.002, decay_steps=500))

    (layer,) = model.config.layers
    assert layer.learning_rate == pytest.approx(0.002) and layer.decay_steps == 500
    assert layer.rule == "sanger" and model.step == 40
    after = states_of(stub.GetModelState(pb.GetModelStateRequest(name=name)))
    np.testing.assert_array_equal(after[0]["kernel"], before[0]["kernel"])
    assert stub.GetModel(pb.GetModelRequest(name=name)).model.config == model.config


def test_update_addresses_one_layer_of_a_stack_and_defaults_the_mask(stub):
    config = pb.ModelConfig(input_dim=6, layers=[
        pb.LayerConfig(units=4, rule="sanger", learning_rate=0.01, seed=1),
        pb.LayerConfig(units=2, rule="oja_subspace", learning_rate=0.01, seed=2)])
    stub.CreateModel(pb.CreateModelRequest(name="update-stack", config=config))
    try:
        model = update(stub, "update-stack", None, pb.LayerConfig(),
                       pb.LayerConfig(learning_rate=0.003))
        first, second = model.config.layers
        assert first.learning_rate == pytest.approx(0.01)
        assert second.learning_rate == pytest.approx(0.003)
    finally:
        stub.DeleteModel(pb.DeleteModelRequest(name="update-stack"))


@pytest.mark.parametrize(("paths", "layer", "words"), [
    (["config.layers.units"], pb.LayerConfig(units=5), "'config.layers.units' cannot be"),
    (["config.layers.rule"], pb.LayerConfig(rule="oja"), "'config.layers.rule' cannot be"),
    (["config.layers.seed"], pb.LayerConfig(seed=3), "'config.layers.seed' cannot be"),
    (["config.input_dim"], pb.LayerConfig(), "'config.input_dim' cannot be"),
    (None, pb.LayerConfig(lateral="anti_hebbian"), "'config.layers.lateral' cannot be"),
    (["config.layers.connectivity"], pb.LayerConfig(connectivity="zero"), "connectivity"),
    (["*"], pb.LayerConfig(learning_rate=0.1), "'*'"),
    (["config.layers.nonsense"], pb.LayerConfig(), "is not a field of Model"),
    (["config.layers.learning_rate"], pb.LayerConfig(), "no entry of model.config.layers"),
    (["config.layers.learning_rate"], pb.LayerConfig(learning_rate=-1.0), "learning_rate"),
    (["config.layers.bcm_threshold_rate"], pb.LayerConfig(bcm_threshold_rate=0.0),
     "bcm_threshold_rate"),
])
def test_update_of_anything_else_is_invalid_argument_naming_the_field(stub, make_model, paths,
                                                                      layer, words):
    name = make_model(6, 3)
    before = stub.GetModel(pb.GetModelRequest(name=name)).model

    error = refused(lambda request: stub.UpdateModel(request), pb.UpdateModelRequest(
        model=pb.Model(name=name, config=pb.ModelConfig(layers=[layer])),
        update_mask=field_mask_pb2.FieldMask(paths=paths) if paths else None))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert words in error.details()
    assert stub.GetModel(pb.GetModelRequest(name=name)).model.config == before.config


def test_update_of_an_unknown_model_is_not_found(stub):
    error = refused(lambda request: stub.UpdateModel(request), pb.UpdateModelRequest(
        model=pb.Model(name="no-such-model", config=pb.ModelConfig(
            layers=[pb.LayerConfig(learning_rate=0.1)]))))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_a_diverged_model_reports_that_it_refuses_updates_once(stub, make_model, hebbian_server,
                                                               caplog):
    """sanger at learning_rate 0.5 on raw 0..16 pixel values diverges within a few samples,
    then refuses every later update (the issue's example)."""
    name = make_model(16, 4, learning_rate=0.5)
    pixels = np.random.default_rng(0).integers(0, 17, size=(200, 16)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="service.server.core.session"):
        for chunk in np.array_split(pixels, 10):
            stub.Process(pb.ProcessRequest(model=name, samples=encode_samples(chunk)))

    model = stub.GetModel(pb.GetModelRequest(name=name)).model
    assert model.refusing_updates and model.recent_skipped_fraction > 0.9
    assert model.samples_skipped > 150
    warnings = [r for r in caplog.records if name in r.getMessage()
                and "refuses most updates" in r.getMessage()]
    assert len(warnings) == 1
    metrics = urllib.request.urlopen(
        f"http://127.0.0.1:{hebbian_server.metrics.http_port}/metrics", timeout=10).read().decode()
    (line,) = [line for line in metrics.splitlines()
               if line.startswith(f'hebbian_recent_skipped_ratio{{model="{name}"}}')]
    assert float(line.split()[-1]) > 0.9

    stub.Reset(pb.ResetRequest(name=name))
    assert not stub.GetModel(pb.GetModelRequest(name=name)).model.refusing_updates


def test_a_healthy_model_does_not_refuse(stub, make_model):
    name = make_model(6, 3)
    stub.Process(pb.ProcessRequest(model=name, samples=encode_samples(X)))
    model = stub.GetModel(pb.GetModelRequest(name=name)).model
    assert not model.refusing_updates and model.recent_skipped_fraction == 0.0
