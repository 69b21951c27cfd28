"""Every field that crosses the API has a documented bound, checked before anything is
queued or logged: request ids, model names, seeds, a layer's settings, the layer count
and the compute cost of a stack. At, just past and far past each bound, against
`limited_server` (and the registry for the configurable limits), a refused call gets
INVALID_ARGUMENT or RESOURCE_EXHAUSTED, changes nothing, and its message quotes at most
a short prefix of the input."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.errors import MAX_MESSAGE_CHARS, InvalidInputError, LimitExceededError
from service.server.core import bounds
from service.server.core.registry import ModelRegistry
from service.server.observability.metrics import ServerMetrics
from tests.security.conftest import health, raw

OK, INVALID = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
MODEL = "bounds"
TWO_LAYERS = pb.ModelConfig(input_dim=4, layers=[
    pb.LayerConfig(units=3, rule="oja", seed=1), pb.LayerConfig(units=2, rule="oja", seed=2),
])
SAMPLE = np.full((1, 4), 0.5, np.float32)
# A status message may name the bound and the field, never the whole input.
SHORT = 400
_ids = itertools.count()


@pytest.fixture(scope="module")
def stub(limited_channel) -> Iterator[pb_grpc.HebbianServiceStub]:
    stub = pb_grpc.HebbianServiceStub(limited_channel)
    stub.CreateModel(pb.CreateModelRequest(name=MODEL, config=TWO_LAYERS), timeout=60)
    yield stub
    stub.DeleteModel(pb.DeleteModelRequest(name=MODEL), timeout=60)


def call(method, request) -> tuple[grpc.StatusCode, str]:
    try:
        method(request, timeout=60)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return OK, ""


def state(stub) -> tuple[int, bytes, int]:
    """(step, an inference-only probe of the weights, a layer seed): what must not move."""
    model = stub.GetModel(pb.GetModelRequest(name=MODEL), timeout=10).model
    probe = stub.Process(pb.ProcessRequest(model=MODEL, samples=raw(np.eye(4, dtype=np.float32)),
                                           learn=False), timeout=10)
    return model.step, probe.activations.raw, model.config.layers[1].seed


def test_a_request_id_is_bounded_in_bytes_for_unary_and_stream_calls(stub):
    before = state(stub)
    for request_id, code in [
        ("a" * bounds.MAX_REQUEST_ID_BYTES, OK),
        ("é" * (bounds.MAX_REQUEST_ID_BYTES // 2), OK),  # 2 bytes each: exactly the bound
        ("a" * (bounds.MAX_REQUEST_ID_BYTES + 1), INVALID),
        ("é" * (bounds.MAX_REQUEST_ID_BYTES // 2) + "a", INVALID),
        ("x" * 60_000, INVALID),
    ]:
        request = pb.ProcessRequest(model=MODEL, samples=raw(SAMPLE), learn=False,
                                    request_id=f"{request_id}")
        got, message = call(stub.Process, request)
        assert got == code, (len(request_id), message)
        assert len(message) < SHORT
        if code == INVALID:
            assert f"at most {bounds.MAX_REQUEST_ID_BYTES}" in message
            stream = pb.StreamProcessRequest(model=MODEL, samples=raw(SAMPLE), learn=False,
                                             request_id=request_id)
            with pytest.raises(grpc.RpcError) as info:
                list(stub.StreamProcess(iter([stream]), timeout=60))
            assert info.value.code() == INVALID and len(info.value.details()) < SHORT
    assert state(stub) == before


def test_a_long_request_id_fails_only_its_own_request_never_a_neighbours_stream(stub):
    ok = [pb.StreamProcessRequest(model=MODEL, samples=raw(SAMPLE), request_id=f"n{i}")
          for i in range(3)]
    answers = []
    for message in ok:
        answers += list(stub.StreamProcess(iter([message]), timeout=60))
        code, _ = call(stub.Process, pb.ProcessRequest(
            model=MODEL, samples=raw(SAMPLE), request_id="y" * 40_000))
        assert code == INVALID
    assert [a.request_id for a in answers] == ["n0", "n1", "n2"]


def test_a_huge_model_name_is_invalid_argument_with_a_short_message(stub):
    name = "m" * 20_000
    for method, request in [
        (stub.GetModel, pb.GetModelRequest(name=name)),
        (stub.DeleteModel, pb.DeleteModelRequest(name=name)),
        (stub.Process, pb.ProcessRequest(model=name, samples=raw(SAMPLE))),
        (stub.CreateModel, pb.CreateModelRequest(name=name, config=TWO_LAYERS)),
        (stub.Reset, pb.ResetRequest(name=name)),
    ]:
        code, message = call(method, request)
        assert code == INVALID and len(message) < SHORT, message
        assert "(20000 characters)" in message


def test_reset_seeds_are_bounded_so_that_every_layer_seed_is_in_range(stub):
    before = state(stub)
    for seed in (bounds.MAX_SEED, 2**63 - 1, 2**40):  # layer 1 would get seed + 1
        code, message = call(stub.Reset, pb.ResetRequest(name=MODEL, seed=seed))
        assert code == INVALID and f"0..{bounds.MAX_SEED - 1}" in message, message
    assert state(stub) == before
    code, _ = call(stub.Reset, pb.ResetRequest(name=MODEL, seed=-1))
    assert code == INVALID
    code, _ = call(stub.Reset, pb.ResetRequest(name=MODEL, seed=bounds.MAX_SEED - 1))
    assert code == OK
    model = stub.GetModel(pb.GetModelRequest(name=MODEL), timeout=10).model
    assert [layer.seed for layer in model.config.layers] == [bounds.MAX_SEED - 1, bounds.MAX_SEED]
    assert MODEL in [m.name for m in stub.ListModels(pb.ListModelsRequest(), timeout=10).models]


def test_create_model_bounds_seeds_settings_and_layer_count(stub):
    def create(config):
        return call(stub.CreateModel, pb.CreateModelRequest(name="bounds-new", config=config))

    for layer, code in [
        (pb.LayerConfig(units=2, seed=bounds.MAX_SEED + 1), INVALID),
        (pb.LayerConfig(units=2, seed=2**63 - 1), INVALID),
        (pb.LayerConfig(units=2, rule="r" * 10_000), INVALID),
        (pb.LayerConfig(units=2, rule="o" * (bounds.MAX_SETTING_CHARS + 1)), INVALID),
    ]:
        got, message = create(pb.ModelConfig(input_dim=2, layers=[layer]))
        assert got == code and len(message) < SHORT, message
    many = pb.ModelConfig(input_dim=2, layers=[pb.LayerConfig(units=2, rule="oja")] * 100)
    got, message = create(many)
    assert got == EXHAUSTED and f"the limit is {bounds.DEFAULT_MAX_LAYERS}" in message
    assert "bounds-new" not in [m.name for m in stub.ListModels(pb.ListModelsRequest()).models]


def test_a_seed_at_the_bound_is_accepted_at_create(stub):
    config = pb.ModelConfig(input_dim=2, layers=[pb.LayerConfig(units=1, seed=bounds.MAX_SEED)])
    code, message = call(stub.CreateModel, pb.CreateModelRequest(name="bounds-seed", config=config))
    assert code == OK, message
    model = stub.GetModel(pb.GetModelRequest(name="bounds-seed")).model
    assert model.config.layers[0].seed == bounds.MAX_SEED
    stub.DeleteModel(pb.DeleteModelRequest(name="bounds-seed"), timeout=60)


def test_the_layer_count_and_the_per_sample_cost_are_bounded_at_and_past_the_limit():
    registry = ModelRegistry(data_dir=None, metrics=ServerMetrics(), max_batch=64,
                             max_queued_samples=64, max_model_weights=10_000, max_layers=3,
                             max_model_cost=2 * 8 * 4 + 8 * 4 * 4 + 2 * 4 * 2)
    layer = {"units": 2, "rule": "oja", "seed": 1}
    try:
        registry.create("three", {"input_dim": 2, "layers": [layer] * 3}, warm_up=False)
        with pytest.raises(LimitExceededError) as info:
            registry.create("four", {"input_dim": 2, "layers": [layer] * 4}, warm_up=False)
        assert "4 layers; the limit is 3" in info.value.message
        # 8 -> 4 sanger -> 2 oja: 2*8*4 + 8*4*4 (y y^T W) + 2*4*2 multiply-adds: at the limit
        at_limit = [{"units": 4, "rule": "sanger", "seed": 1}, layer]
        assert bounds.stack_size(8, at_limit)[1] == registry._max_model_cost
        registry.create("cost", {"input_dim": 8, "layers": at_limit}, warm_up=False)
        with pytest.raises(LimitExceededError) as info:
            registry.create("costly", {"input_dim": 9, "layers": at_limit}, warm_up=False)
        assert "multiply-adds per sample" in info.value.message
        assert registry.names() == ["cost", "three"]
    finally:
        registry.close()


def test_error_messages_are_never_longer_than_the_cap():
    error = InvalidInputError("x" * 100_000)
    assert len(error.message) < MAX_MESSAGE_CHARS + 40
    assert bounds.quote("y" * 1000) == f"{'y' * bounds.QUOTE_CHARS!r}... (1000 characters)"
    assert bounds.quote("short") == "'short'"


# -- fuzz: every bounded field at, just past and far past its bound ------------------------

# field: its bound; the layer count is fuzzed past its bound only (each model at the bound
# would be built), `test_the_layer_count_...` covers the bound itself.
BOUNDS = {
    "request_id": bounds.MAX_REQUEST_ID_BYTES,
    "model": 63,
    "setting": bounds.MAX_SETTING_CHARS,
    "seed": bounds.MAX_SEED - 1,  # the 2-layer model's largest Reset seed
    "layers": bounds.DEFAULT_MAX_LAYERS,
}


@st.composite
def sized_fields(draw):
    field = draw(st.sampled_from(sorted(BOUNDS)))
    bound = BOUNDS[field]
    if field == "layers":
        return field, draw(st.sampled_from([bound + 1, bound + 2, 2 * bound, 1000]))
    near = st.sampled_from([1, bound - 1, bound, bound + 1, bound + 2, 2 * bound])
    far = st.integers(1, 3 * bound) if field != "seed" else st.integers(0, 2**63 - 1)
    return field, draw(near | far)


def fuzz_call(stub, field: str, size: int) -> tuple[grpc.StatusCode, str]:
    """Send `field` with a value of `size` (bytes, characters, the seed, layers)."""
    if field == "request_id":
        request_id = f"{next(_ids)}-".ljust(size, "z")[:size]
        return call(stub.Process, pb.ProcessRequest(
            model=MODEL, samples=raw(SAMPLE), learn=False, request_id=request_id))
    if field == "model":
        return call(stub.GetModel, pb.GetModelRequest(name="b" * size))
    if field == "seed":
        return call(stub.Reset, pb.ResetRequest(name=MODEL, seed=size))
    rule, count = ("o" * size, 1) if field == "setting" else ("oja", size)
    config = pb.ModelConfig(input_dim=2, layers=[pb.LayerConfig(units=1, rule=rule)] * count)
    return call(stub.CreateModel, pb.CreateModelRequest(name="bounds-fuzz", config=config))


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(case=sized_fields())
def test_fuzz_sizes_at_and_past_each_bound(stub, limited_channel, case):
    field, size = case
    bound = BOUNDS[field]
    before = state(stub)
    code, message = fuzz_call(stub, field, size)
    assert len(message) < SHORT, (field, size, message)
    if size > bound:
        expected = EXHAUSTED if field == "layers" else INVALID
        assert code == expected, (field, size, message)
        assert state(stub) == before  # refused: nothing changed
    elif field == "model":
        assert code == grpc.StatusCode.NOT_FOUND  # a valid name, no such model
    elif field == "setting":
        assert code == INVALID and "rule must be one of" in message  # valid size, bad rule
    else:
        assert code == OK, (field, size, message)
    assert health(limited_channel) == "SERVING"


def test_a_model_queue_is_bounded_in_bytes_as_well_as_in_samples():
    registry = ModelRegistry(data_dir=None, metrics=ServerMetrics(), max_batch=64,
                             max_queued_samples=1000, max_model_weights=10_000,
                             max_queued_bytes=4 * 8 * 10)
    try:
        wide = registry.create("wide", {"input_dim": 8, "layers": [{"units": 2}]}, warm_up=False)
        narrow = registry.create("narrow", {"input_dim": 1, "layers": [{"units": 1}]},
                                 warm_up=False)
        assert wide._combiner.capacity == 10  # 320 bytes of 8-wide float32 samples
        assert narrow._combiner.capacity == 80
    finally:
        registry.close()
