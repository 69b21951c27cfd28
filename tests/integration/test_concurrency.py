"""Many concurrent streams on one model, and exactness against a per-sample reference."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from service.api import hebbian_pb2 as pb
from service.model import initial_state
from tests.unit.reference import gaussian_data, numpy_online

STREAMS, PER_STREAM = 8, 1000


def raw(x: np.ndarray) -> pb.Tensor:
    return pb.Tensor(shape=x.shape, raw=np.ascontiguousarray(x, "<f4").tobytes())


def rows(tensor: pb.Tensor) -> np.ndarray:
    return np.frombuffer(tensor.raw, "<f4").reshape(tuple(tensor.shape))


def test_eight_concurrent_streams_are_all_applied_and_each_answered_in_order(stub, make_model):
    name = make_model(input_dim=16, units=4, learning_rate=1e-3)
    data = np.random.default_rng(0).normal(size=(STREAMS, PER_STREAM, 16)).astype(np.float32)
    answers: dict[int, list] = {}
    failures = []

    def run(stream: int) -> None:
        messages = (
            pb.StreamProcessRequest(model=name, samples=raw(x[None]), request_id=f"{stream}-{i}")
            for i, x in enumerate(data[stream])
        )
        try:
            answers[stream] = [(r.request_id, r.step) for r in stub.StreamProcess(messages)]
        except Exception as err:  # reported below, with the stream
            failures.append((stream, err))

    threads = [threading.Thread(target=run, args=(s,)) for s in range(STREAMS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)

    assert not failures
    for stream in range(STREAMS):
        ids, steps = zip(*answers[stream], strict=True)
        assert list(ids) == [f"{stream}-{i}" for i in range(PER_STREAM)]
        assert all(a < b for a, b in itertools.pairwise(steps))  # in order
    assert max(step for a in answers.values() for _, step in a) == STREAMS * PER_STREAM
    assert stub.GetModel(pb.GetModelRequest(name=name)).model.step == STREAMS * PER_STREAM


@pytest.mark.parametrize("rule", ["sanger", "oja"])
def test_a_streams_activations_equal_a_per_sample_numpy_reference(hebbian_server, stub,
                                                                  make_model, rule):
    samples, _, _ = gaussian_data(n=1000, seed=3)
    name = make_model(input_dim=samples.shape[1], units=3, rule=rule, learning_rate=0.005)
    stack = hebbian_server.registry.get(name).stack
    kernel0 = initial_state(stack.params[0], stack.seeds[0]).kernel
    sizes = np.random.default_rng(4).integers(1, 8, size=400)
    bounds = np.cumsum(sizes)
    chunks = np.split(samples, bounds[bounds < len(samples)])
    messages = (pb.StreamProcessRequest(model=name, samples=raw(c)) for c in chunks)

    served = np.concatenate([rows(r.activations) for r in stub.StreamProcess(messages)])

    _, _, _, expected = numpy_online(kernel0, samples, rule, eta0=0.005)
    assert served.shape == expected.shape == (1000, 3)
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-5)
