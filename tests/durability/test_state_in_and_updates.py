"""A model created from a state, and a hyper-parameter update, survive a SIGKILL right
after their answer: the state is the created model's first snapshot, the update a log
record replayed at its position (or carried by the snapshot taken after it)."""

from __future__ import annotations

import grpc
import numpy as np

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.client import HebbianClient
from service.model import HebbianStack, StackConfig
from tests.durability.conftest import kill
from tests.server_process import ServerProcess

CONFIG = {"input_dim": 8, "layers": [
    {"units": 3, "rule": "sanger", "learning_rate": 0.01, "seed": 4, "lateral": "anti_hebbian"}]}
RNG = np.random.default_rng(13)


def trained_state(samples: np.ndarray) -> HebbianStack:
    """A model trained offline, as a notebook would have it."""
    stack = HebbianStack(StackConfig.from_dict(CONFIG))
    stack.engine.process(samples)
    return stack


def assert_same(arrays: dict, stack: HebbianStack) -> None:
    for key, value in stack.state_arrays().items():
        assert np.array_equal(arrays[key], value), key


def test_a_model_created_from_a_state_survives_sigkill_right_after_the_answer(tmp_path):
    offline = trained_state(RNG.normal(size=(50, 8)).astype(np.float32))
    server = ServerProcess(tmp_path)
    server.start()
    with HebbianClient(server.target) as client:
        created = client.create_model("pushed", offline.resolved_config().to_dict(),
                                      state=offline.state_arrays())
        assert created.step == 50
    kill(server)

    server.start()
    with HebbianClient(server.target) as client:
        state = client.get_model_state("pushed")
        assert state.step == 50
        assert_same(state.arrays, offline)
        x = RNG.normal(size=(7, 8)).astype(np.float32)
        np.testing.assert_array_equal(client.process(x, model="pushed"),
                                      offline.engine.process(x).activations)
    server.stop()


def test_an_update_survives_sigkill_from_the_log_and_from_a_snapshot(tmp_path):
    batches = [RNG.normal(size=(20, 8)).astype(np.float32) for _ in range(4)]
    offline = HebbianStack(StackConfig.from_dict(CONFIG))
    # no scheduled snapshots: the update stays in the log until the Snapshot call
    server = ServerProcess(tmp_path, "--snapshot-every-samples", "1000000000")
    server.start()
    with HebbianClient(server.target) as client:
        client.create_model("tuned", CONFIG)
        client.process(batches[0], model="tuned")
        client.update_model("tuned", learning_rate=0.05, lateral_learning_rate=0.002)
        client.process(batches[1], model="tuned")
    kill(server)  # the update is a log record only
    offline.engine.process(batches[0])
    offline.update(({"learning_rate": 0.05, "lateral_learning_rate": 0.002},))
    offline.engine.process(batches[1])
    server.start()
    with grpc.insecure_channel(server.target) as channel, \
            HebbianClient(server.target) as client:
        layer = pb_grpc.HebbianServiceStub(channel).GetModel(
            pb.GetModelRequest(name="tuned")).model.config.layers[0]
        assert abs(layer.learning_rate - 0.05) < 1e-7
        assert abs(layer.lateral_learning_rate - 0.002) < 1e-7
        assert_same(client.get_model_state("tuned").arrays, offline)
        client.update_model("tuned", decay_steps=500)
        offline.update(({"decay_steps": 500.0},))
        client.snapshot("tuned")  # the update is in this snapshot's config, the log is cut
        client.process(batches[2], model="tuned")
        offline.engine.process(batches[2])
    kill(server)

    server.start()
    with HebbianClient(server.target) as client:
        layer = client.get_model("tuned").config.layers[0]
        assert layer.decay_steps == 500 and abs(layer.learning_rate - 0.05) < 1e-7
        assert_same(client.get_model_state("tuned").arrays, offline)
        client.process(batches[3], model="tuned")
        offline.engine.process(batches[3])
        assert_same(client.get_model_state("tuned").arrays, offline)
    server.stop()
