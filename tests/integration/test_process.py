"""Process and StreamProcess against a real server: encodings, learning switch, errors."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from service.api import hebbian_pb2 as pb
from tests.integration.conftest import MAX_MESSAGE_BYTES, MAX_SAMPLES

rng = np.random.default_rng(0)


def raw(x: np.ndarray) -> pb.Tensor:
    return pb.Tensor(shape=x.shape, raw=x.astype("<f4").tobytes())


def activations(tensor: pb.Tensor) -> np.ndarray:
    data = np.frombuffer(tensor.raw, "<f4") if tensor.raw else np.array(tensor.values, np.float32)
    return data.reshape(tuple(tensor.shape))


def state(server, name: str) -> tuple[int, np.ndarray]:
    """The model's step and first kernel, read from the live server."""
    model = server.registry.get(name)
    return model.status().step, model.stack.layer_states()[0].kernel


def test_process_with_values_returns_values_and_the_new_step(stub):
    before = stub.GetModel(pb.GetModelRequest()).model.step
    x = rng.normal(size=(3, 16)).astype(np.float32)

    response = stub.Process(pb.ProcessRequest(samples=pb.Tensor(values=x.ravel()), request_id="v1"))

    assert list(response.activations.shape) == [3, 4]
    assert len(response.activations.values) == 12 and not response.activations.raw
    assert response.step >= before + 3
    assert (response.request_id, response.model) == ("v1", "default")


def test_process_with_raw_returns_raw_and_matches_values_encoding(stub, make_model):
    name_a, name_b = make_model(input_dim=5), make_model(input_dim=5)  # same seed
    x = rng.normal(size=(7, 5)).astype(np.float32)

    by_raw = stub.Process(pb.ProcessRequest(model=name_a, samples=raw(x)))
    by_values = stub.Process(pb.ProcessRequest(model=name_b, samples=pb.Tensor(values=x.ravel())))

    assert by_raw.activations.raw and not by_raw.activations.values
    assert by_raw.step == by_values.step == 7
    np.testing.assert_array_equal(
        activations(by_raw.activations), activations(by_values.activations)
    )


def test_learn_false_is_inference_only(hebbian_server, stub, make_model):
    name = make_model()
    stub.Process(pb.ProcessRequest(model=name, samples=raw(rng.normal(size=(4, 6)))))
    step, kernel = state(hebbian_server, name)
    probe = raw(rng.normal(size=(5, 6)))

    first = stub.Process(pb.ProcessRequest(model=name, samples=probe, learn=False))
    second = stub.Process(pb.ProcessRequest(model=name, samples=probe, learn=False))

    assert first.step == second.step == step == 4
    np.testing.assert_array_equal(activations(first.activations), activations(second.activations))
    after_step, after_kernel = state(hebbian_server, name)
    assert after_step == step
    np.testing.assert_array_equal(after_kernel, kernel)
    assert stub.GetModel(pb.GetModelRequest(name=name)).model.samples_inferred == 10


def _bad_requests(name: str) -> list[tuple[str, pb.ProcessRequest, grpc.StatusCode]]:
    ok = raw(np.ones((1, 6)))
    too_many = raw(np.zeros((MAX_SAMPLES + 1, 6)))
    too_big = pb.Tensor(raw=b"\0" * (MAX_MESSAGE_BYTES + 24))
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return [
        ("unknown model", pb.ProcessRequest(model="no-such-model", samples=ok),
         grpc.StatusCode.NOT_FOUND),
        ("bad model name", pb.ProcessRequest(model="Bad Name!", samples=ok), invalid),
        ("wrong width", pb.ProcessRequest(model=name, samples=raw(np.ones((2, 5)))), invalid),
        ("NaN", pb.ProcessRequest(model=name, samples=raw(np.full((2, 6), np.nan))), invalid),
        ("Inf", pb.ProcessRequest(model=name, samples=pb.Tensor(values=[np.inf] * 6)), invalid),
        ("empty", pb.ProcessRequest(model=name, samples=pb.Tensor()), invalid),
        ("ragged", pb.ProcessRequest(
            model=name, samples=pb.Tensor(shape=[3, 6], values=[1.0] * 17)), invalid),
        ("too many samples", pb.ProcessRequest(model=name, samples=too_many),
         grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("message too large", pb.ProcessRequest(model=name, samples=too_big),
         grpc.StatusCode.RESOURCE_EXHAUSTED),
    ]


def test_every_refused_request_gets_its_status_and_changes_nothing(
    hebbian_server, stub, make_model
):
    name = make_model()
    stub.Process(pb.ProcessRequest(model=name, samples=raw(rng.normal(size=(3, 6)))))
    step, kernel = state(hebbian_server, name)

    for what, request, code in _bad_requests(name):
        with pytest.raises(grpc.RpcError) as info:
            stub.Process(request)
        assert info.value.code() == code, f"{what}: {info.value.details()}"
        assert info.value.details(), what

    after_step, after_kernel = state(hebbian_server, name)
    assert after_step == step == 3
    np.testing.assert_array_equal(after_kernel, kernel)
    model = stub.GetModel(pb.GetModelRequest(name=name)).model
    assert (model.step, model.samples_inferred) == (3, 0)


def test_a_request_whose_answer_would_be_too_large_is_refused_before_it_runs(
    hebbian_server, stub, make_model
):
    name = make_model(input_dim=2, units=128)
    samples = raw(np.ones((2100, 2)))  # 17 kB in, 1.07 MB of activations out (limit 1 MiB)

    with pytest.raises(grpc.RpcError) as info:
        stub.Process(pb.ProcessRequest(model=name, samples=samples))

    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "message size limit" in info.value.details()
    assert state(hebbian_server, name)[0] == 0


def test_error_messages_say_what_was_expected(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.Process(pb.ProcessRequest(samples=pb.Tensor(values=[1.0] * 15)))
    assert "input width 16" in info.value.details()

    with pytest.raises(grpc.RpcError) as info:
        stub.Process(pb.ProcessRequest(model="missing", samples=pb.Tensor(values=[1.0] * 16)))
    assert "'missing' not found" in info.value.details()


def stream_messages(name: str, xs, bad_at: int | None = None, prefix: str = ""):
    for i, x in enumerate(xs):
        samples = pb.Tensor(values=[np.nan] * 6) if i == bad_at else raw(x[None])
        yield pb.StreamProcessRequest(model=name, samples=samples, request_id=f"{prefix}{i}")


def test_a_bad_message_fails_only_its_stream(hebbian_server, stub, make_model):
    name = make_model()
    xs = rng.normal(size=(6, 6)).astype(np.float32)
    # request ids are per model (exactly-once): the two streams use distinct ones
    good_stream = stub.StreamProcess(stream_messages(name, xs, prefix="good-"))

    answers = []
    with pytest.raises(grpc.RpcError) as info:
        for response in stub.StreamProcess(stream_messages(name, xs, bad_at=2)):
            answers.append(response.request_id)

    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NaN or Inf" in info.value.details()
    assert answers == ["0", "1"]  # answered before the bad one; nothing after it ran
    assert [r.request_id for r in good_stream] == [f"good-{i}" for i in range(6)]
    assert state(hebbian_server, name)[0] == 2 + 6
    # the model still serves
    assert stub.Process(pb.ProcessRequest(model=name, samples=raw(xs[:1]))).step == 9


def test_a_stream_answers_in_order_with_each_message_encoded_like_its_samples(stub, make_model):
    name = make_model()
    xs = rng.normal(size=(4, 6)).astype(np.float32)

    def messages():
        yield pb.StreamProcessRequest(model=name, samples=raw(xs[:2]), request_id="a")
        yield pb.StreamProcessRequest(model=name, samples=pb.Tensor(values=xs[2]), request_id="b")
        yield pb.StreamProcessRequest(model=name, samples=raw(xs[3:]), request_id="c", learn=False)

    responses = list(stub.StreamProcess(messages()))

    assert [(r.request_id, r.step) for r in responses] == [("a", 2), ("b", 3), ("c", 3)]
    assert [bool(r.activations.raw) for r in responses] == [True, False, True]
    assert [tuple(r.activations.shape) for r in responses] == [(2, 3), (1, 3), (1, 3)]


def test_snapshot_list_and_restore_round_trip_over_grpc(stub, make_model):
    name = make_model()
    xs = np.random.default_rng(9).normal(size=(10, 6)).astype(np.float32)
    stub.Process(pb.ProcessRequest(model=name, samples=raw(xs[:4])))
    taken = stub.Snapshot(pb.SnapshotRequest(name=name, include_weights=True))
    assert taken.snapshot.step == 4 and len(taken.layers) == 1
    kernel = np.array(taken.layers[0].kernel.values, np.float32).reshape(6, 3)
    assert tuple(taken.layers[0].kernel.shape) == (6, 3) and taken.layers[0].step == 4
    stub.Process(pb.ProcessRequest(model=name, samples=raw(xs[4:])))
    listed = stub.ListSnapshots(pb.ListSnapshotsRequest(name=name)).snapshots
    assert [s.snapshot_id for s in listed] == [taken.snapshot.snapshot_id]

    restored = stub.Restore(pb.RestoreRequest(name=name, snapshot_id=taken.snapshot.snapshot_id))

    assert restored.model.step == 4
    again = stub.Snapshot(pb.SnapshotRequest(name=name, include_weights=True))
    assert np.array_equal(np.array(again.layers[0].kernel.values, np.float32).reshape(6, 3),
                          kernel)
    model = stub.GetModel(pb.GetModelRequest(name=name)).model
    assert model.last_snapshot.snapshot_id == again.snapshot.snapshot_id
    with pytest.raises(grpc.RpcError) as info:
        stub.Restore(pb.RestoreRequest(name=name, snapshot_id="0000000000000999"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        stub.Restore(pb.RestoreRequest(name=name))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
