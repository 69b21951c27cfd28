"""`service.client.HebbianClient` against the real server of `conftest.py` on a free port."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest

from service.client import (
    HebbianClient,
    HebbianError,
    ServerUnavailableError,
    config_from_proto,
)
from service.client_aio import AsyncHebbianClient
from tests.server_process import free_port

SMALL = {"input_dim": 6, "layers": [{"units": 3, "rule": "sanger", "learning_rate": 0.01,
                                     "seed": 7}]}


@pytest.fixture
def client(hebbian_server):
    with HebbianClient(hebbian_server.target, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def small_model_name(hebbian_server):
    """A 6 -> 3 sanger model shared by the module (creating one compiles its engine)."""
    with HebbianClient(hebbian_server.target, timeout=60) as client:
        client.create_model("client-small", SMALL)
        yield "client-small"
        client.delete_model("client-small")


@pytest.fixture
def small_model(client, small_model_name):
    """The shared small model, reset to its initial weights (seed 7) and step 0."""
    client.reset(small_model_name, seed=7)
    return small_model_name


def samples(n: int, width: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, width)).astype(np.float32)


def test_process_returns_one_activation_row_per_sample_and_the_step_counts_them(client):
    first = client.process_full(samples(5))
    second = client.process_full(samples(3, seed=1), request_id="r-2")

    assert first.activations.shape == (5, 4)
    assert first.activations.dtype == np.float32
    assert first.model == "default"
    assert second.step == first.step + 3
    assert second.request_id == "r-2"
    assert second.skipped == ()


def test_process_of_one_1d_sample_returns_a_1d_activation(client):
    assert client.process(samples(1)[0]).shape == (4,)


def test_inference_only_leaves_the_state_untouched(client):
    probe = samples(4, seed=2)
    before = client.get_model().step

    first = client.process_full(probe, learn=False)
    second = client.process_full(probe, learn=False)

    assert first.step == second.step == before == client.get_model().step
    np.testing.assert_array_equal(first.activations, second.activations)


def test_stream_answers_each_batch_in_order_with_its_step(client, small_model):
    batches = [samples(n, 6, seed=n) for n in (1, 7, 64, 3)]

    results = list(client.stream_full(iter(batches), model=small_model, id_prefix="s"))

    assert [r.request_id for r in results] == ["s:0", "s:1", "s:2", "s:3"]
    assert [r.step for r in results] == [1, 8, 72, 75]
    assert [r.activations.shape for r in results] == [(1, 3), (7, 3), (64, 3), (3, 3)]
    assert all(r.model == small_model for r in results)


def test_stream_equals_unary_calls_from_the_same_initial_state(client, small_model):
    batches = [samples(n, 6, seed=10 + n) for n in (5, 1, 30, 9)]

    streamed = list(client.stream(batches, model=small_model))
    client.reset(small_model, seed=7)
    unary = [client.process(batch, model=small_model) for batch in batches]

    for got, want in zip(streamed, unary, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_stream_of_1d_samples_yields_1d_activations(client, small_model):
    rows = samples(3, 6, seed=3)

    results = list(client.stream(rows, model=small_model))

    assert [r.shape for r in results] == [(3,)] * 3


def test_models_can_be_created_listed_read_reset_and_deleted(client):
    created = client.create_model("client-crud", SMALL)
    try:
        assert created.name == "client-crud"
        assert created.step == 0
        assert "client-crud" in [m.name for m in client.list_models()]
        client.process(samples(10, 6), model="client-crud")
        model = client.get_model("client-crud")
        assert model.step == 10
        config = config_from_proto(model.config)
        assert config["input_dim"] == 6
        assert {k: config["layers"][0][k] for k in ("units", "rule", "seed")} == {
            "units": 3, "rule": "sanger", "seed": 7}
        assert config["layers"][0]["learning_rate"] == pytest.approx(0.01)
        assert client.reset("client-crud", seed=3).step == 0
    finally:
        client.delete_model("client-crud")
    assert "client-crud" not in [m.name for m in client.list_models()]


def test_the_default_model_is_listed_and_marked(client):
    (default,) = [m for m in client.list_models() if m.is_default]
    assert default.name == "default"
    assert default.config.input_dim == 16
    assert [layer.units for layer in default.config.layers] == [4]


def test_creating_an_existing_model_is_already_exists(client, small_model):
    with pytest.raises(HebbianError) as error:
        client.create_model(small_model, SMALL)
    assert error.value.code == grpc.StatusCode.ALREADY_EXISTS


def test_a_config_key_the_api_does_not_carry_is_refused_before_sending(client):
    with pytest.raises(ValueError, match="'colour'"):
        client.create_model("never-created", {"input_dim": 4, "layers": [{"units": 2,
                                                                           "colour": "red"}]})


def test_unknown_model_is_not_found(client):
    with pytest.raises(HebbianError) as error:
        client.process(samples(1), model="missing-model")
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    assert "missing-model" in str(error.value)


@pytest.mark.parametrize("bad", [samples(2, width=15), np.full((1, 16), np.nan, np.float32),
                                 np.full((1, 16), np.inf, np.float32)])
def test_bad_samples_are_invalid_argument_and_change_nothing(client, bad):
    before = client.get_model().step

    with pytest.raises(HebbianError) as error:
        client.process(bad)

    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert client.get_model().step == before


def test_a_bad_batch_ends_the_stream_with_invalid_argument_after_earlier_answers(
    client, small_model
):
    batches = [samples(2, 6), samples(2, 5), samples(2, 6)]
    answered = []

    with pytest.raises(HebbianError) as error:
        for result in client.stream_full(batches, model=small_model):
            answered.append(result.step)

    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert answered == [2]
    assert client.get_model(small_model).step == 2


def test_an_unreachable_server_raises_server_unavailable_at_once():
    started = time.monotonic()
    with (
        HebbianClient(f"127.0.0.1:{free_port()}", timeout=10) as client,
        pytest.raises(ServerUnavailableError, match="cannot reach the Hebbian server"),
    ):
        client.list_models()
    assert time.monotonic() - started < 5


def test_learn_one_learns_one_sample_and_predict_one_leaves_the_state(client, small_model):
    x = samples(1, 6, seed=8)[0]

    learned = client.learn_one(x, model=small_model)
    after_learning = client.get_model(small_model).step
    predicted = client.predict_one(x, model=small_model)
    again = client.predict_one(x, model=small_model)

    assert learned.shape == predicted.shape == (3,)
    assert after_learning == 1
    assert client.get_model(small_model).step == 1
    np.testing.assert_array_equal(predicted, again)
    assert not np.array_equal(learned, predicted)  # the weights moved after learning x


def test_learn_one_refuses_a_batch(client, small_model):
    with pytest.raises(ValueError, match="1-D"):
        client.learn_one(samples(2, 6), model=small_model)
    assert client.get_model(small_model).step == 0


def test_every_learning_process_call_gets_a_request_id_so_that_a_resend_is_applied_once(
    client
):
    first = client.process_full(samples(2, seed=9))
    assert len(first.request_id) == 32
    assert client.process_full(samples(2, seed=9), learn=False).request_id == ""

    again = client.process_full(samples(2, seed=9), request_id=first.request_id)

    assert again.step == first.step == client.get_model().step
    np.testing.assert_array_equal(again.activations, first.activations)


def test_an_exception_of_the_batches_ends_the_stream_after_the_answers_before_it(
    client, small_model
):
    def batches():
        yield samples(2, 6)
        yield samples(3, 6)
        raise ValueError("bad.csv, line 7, column 2: not a number: 'x'")

    answered = []
    with pytest.raises(ValueError, match="line 7, column 2"):
        for result in client.stream_full(batches(), model=small_model):
            answered.append(result.step)

    assert answered == [2, 5]
    assert client.get_model(small_model).step == 5


# -- the asyncio client: the same surface ---------------------------------------------


def run_async(coroutine_function, target: str):
    async def main():
        async with AsyncHebbianClient(target, timeout=30) as client:
            return await coroutine_function(client)

    return asyncio.run(main())


def test_the_asyncio_client_processes_learns_one_and_predicts_one(hebbian_server, small_model):
    x = samples(1, 6, seed=4)[0]

    async def scenario(client):
        full = await client.process_full(samples(5, 6), model=small_model, request_id="a-1")
        one = await client.learn_one(x, model=small_model)
        peek = await client.predict_one(x, model=small_model)
        return full, one, peek, (await client.get_model(small_model)).step

    full, one, peek, step = run_async(scenario, hebbian_server.target)

    assert full.activations.shape == (5, 3)
    assert (full.step, full.request_id, full.model) == (5, "a-1", small_model)
    assert one.shape == peek.shape == (3,)
    assert step == 6


def test_the_asyncio_stream_equals_the_blocking_one(client, hebbian_server, small_model):
    batches = [samples(n, 6, seed=20 + n) for n in (4, 1, 16)]
    blocking = list(client.stream_full(batches, model=small_model, id_prefix="b"))
    client.reset(small_model, seed=7)

    async def source():
        for batch in batches:
            yield batch

    async def scenario(client):
        return [r async for r in client.stream_full(source(), model=small_model, id_prefix="b",
                                                    window=2)]

    streamed = run_async(scenario, hebbian_server.target)

    assert [r.request_id for r in streamed] == ["b:0", "b:1", "b:2"]
    assert [r.step for r in streamed] == [r.step for r in blocking] == [4, 5, 21]
    for got, want in zip(streamed, blocking, strict=True):
        np.testing.assert_allclose(got.activations, want.activations, rtol=1e-6, atol=1e-7)


def test_the_asyncio_client_manages_models_and_reports_statuses(hebbian_server):
    async def scenario(client):
        created = await client.create_model("client-aio", SMALL)
        names = [m.name for m in await client.list_models()]
        with pytest.raises(HebbianError) as invalid:
            await client.process(samples(1, 5), model="client-aio")
        await client.snapshot("client-aio")
        snapshots = await client.list_snapshots("client-aio")
        reset = await client.reset("client-aio", seed=2)
        await client.delete_model("client-aio")
        with pytest.raises(HebbianError) as missing:
            await client.get_model("client-aio")
        return created, names, invalid.value, snapshots, reset, missing.value

    created, names, invalid, snapshots, reset, missing = run_async(
        scenario, hebbian_server.target)

    assert created.name == "client-aio" and "client-aio" in names
    assert invalid.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(snapshots) >= 1
    assert reset.step == 0
    assert missing.code == grpc.StatusCode.NOT_FOUND


def test_an_unreachable_server_fails_the_asyncio_client_at_once():
    async def scenario(client):
        with pytest.raises(ServerUnavailableError, match="cannot reach the Hebbian server"):
            await client.list_models()

    started = time.monotonic()
    run_async(scenario, f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 5
