"""Property: whatever sequence of acknowledged Process, Reset, Restore, Snapshot,
CreateModel and DeleteModel calls a server took, a SIGKILL and a restart give back
exactly that state: every model's weights, lateral weights, mask, BCM threshold and step
bit for bit, the seeds in force (which a later `Reset()` without a seed starts from) and
the exactly-once window (a resent request id gets its first answer and changes nothing),
compared with a reference that never crashed: in-process `HebbianStack`s fed the same
acknowledged operations.

The first cycle starts with the case that used to fail: `Reset(seed=7)`, Snapshot,
`Reset()`, learning (the snapshot did not keep the seeds, so recovery rebuilt weights
from the creation seeds). The operations are random (seeded; the operations so far are
in every assertion's message).
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.client import decode_tensor, encode_samples
from service.codec.configs import config_from_proto
from service.model import HebbianStack, StackConfig
from service.model.layer_state import state_key
from service.model.rules import HebbianState
from service.server.config import EMBEDDED_MODELS
from service.server.core.names import DEFAULT_MODEL
from tests.durability.conftest import kill
from tests.server_process import ServerProcess

KEEP = 3  # --snapshot-keep
CYCLES = 2  # cycles of random operations, each ended by a SIGKILL and a restart
OPS_PER_CYCLE = 10
RULES = ("oja", "sanger", "oja_subspace", "hebb", "bcm")


class Reference:
    """One model as it must be: a stack that never crashed, and the snapshots it took."""

    def __init__(self, config: dict):
        self.stack = HebbianStack(StackConfig.from_dict(config))
        self.window: dict[str, tuple[bytes, int]] = {}  # request id -> (activations, step)
        self.snapshots: dict[str, tuple[dict[str, np.ndarray], list[int], dict]] = {}

    @property
    def seeds(self) -> list[int]:
        return list(self.stack.seeds)

    def snapshot(self, snapshot_id: str) -> None:
        arrays = {k: v.copy() for k, v in self.stack.state_arrays().items()}
        self.snapshots[snapshot_id] = (arrays, self.seeds, dict(self.window))
        for old in sorted(self.snapshots)[:-KEEP]:  # the server keeps the newest KEEP
            del self.snapshots[old]

    def restore(self, snapshot_id: str) -> None:
        arrays, seeds, window = self.snapshots[snapshot_id]
        self.stack.load_state_arrays(arrays)
        self.stack.set_seeds(seeds)
        self.window = dict(window)

    def reset(self, seed: int | None) -> None:
        self.stack.reset(seed)
        self.window.clear()  # a Reset starts a new history


class Run:
    """The server and the references, driven by the same acknowledged operations."""

    def __init__(self, server: ServerProcess, rng: np.random.Generator):
        self.server, self.rng = server, rng
        default = EMBEDDED_MODELS[DEFAULT_MODEL]
        self.models = {DEFAULT_MODEL: Reference(default)}
        self.created = 0
        self.log: list[str] = []
        self.channel: grpc.Channel | None = None

    def stub(self) -> pb_grpc.HebbianServiceStub:
        """A stub on a new channel to the (restarted) server."""
        if self.channel is not None:
            self.channel.close()
        self.channel = grpc.insecure_channel(self.server.target)
        return pb_grpc.HebbianServiceStub(self.channel)

    # -- operations: each is acknowledged by the server, then applied to the reference ----

    def process(self, stub, name: str, n: int, learn: bool = True) -> None:
        ref = self.models[name]
        x = self.rng.normal(size=(n, ref.stack.engine.input_dim)).astype(np.float32)
        request_id = f"r{len(self.log)}"
        answer = stub.Process(pb.ProcessRequest(model=name, samples=encode_samples(x),
                                                learn=learn, request_id=request_id), timeout=120)
        ref.stack.engine.process(x, learn)
        ref.window[request_id] = (answer.activations.raw, answer.step)
        self.log.append(f"process {name} {n} learn={learn}")

    def reset(self, stub, name: str, seed: int | None) -> None:
        request = pb.ResetRequest(name=name)
        if seed is not None:
            request.seed = seed
        stub.Reset(request, timeout=120)
        self.models[name].reset(seed)
        self.log.append(f"reset {name} seed={seed}")

    def snapshot(self, stub, name: str) -> pb.SnapshotResponse:
        response = stub.Snapshot(pb.SnapshotRequest(name=name, include_weights=True),
                                 timeout=120)
        self.models[name].snapshot(response.snapshot.snapshot_id)
        self.log.append(f"snapshot {name} -> {response.snapshot.snapshot_id}")
        return response

    def restore(self, stub, name: str, snapshot_id: str) -> None:
        stub.Restore(pb.RestoreRequest(name=name, snapshot_id=snapshot_id), timeout=120)
        self.models[name].restore(snapshot_id)
        self.log.append(f"restore {name} {snapshot_id}")

    def create(self, stub) -> None:
        self.created += 1
        name = f"m{self.created}"
        layers, width = [], int(self.rng.integers(2, 7))
        for _ in range(int(self.rng.integers(1, 3))):
            units = int(self.rng.integers(1, width + 1))
            layer = {"units": units, "rule": str(self.rng.choice(RULES)),
                     "learning_rate": 0.01}
            if self.rng.random() < 0.5:
                layer["seed"] = int(self.rng.integers(0, 1000))
            if self.rng.random() < 0.3:
                layer["lateral"] = "anti_hebbian"
            layers.append(layer)
            width = units
        config = pb.ModelConfig(input_dim=int(self.rng.integers(2, 7)), layers=[
            pb.LayerConfig(**layer) for layer in layers])
        response = stub.CreateModel(pb.CreateModelRequest(name=name, config=config), timeout=180)
        # the server drew the seeds left open: the reference starts from the same ones
        self.models[name] = Reference(config_from_proto(response.model.config))
        self.log.append(f"create {name} {config_from_proto(response.model.config)}")

    def delete(self, stub, name: str) -> None:
        stub.DeleteModel(pb.DeleteModelRequest(name=name), timeout=180)
        del self.models[name]
        self.log.append(f"delete {name}")

    def random_op(self, stub, avoid: str | None = None) -> None:
        names = sorted(set(self.models) - {avoid})
        if not names:
            self.create(stub)
            return
        name = str(self.rng.choice(names))
        ref = self.models[name]
        kind = self.rng.choice(
            ["process", "process", "process", "infer", "reset", "reset_seedless", "snapshot",
             "restore", "create", "delete"])
        if kind == "process":
            self.process(stub, name, int(self.rng.integers(1, 9)))
        elif kind == "infer":
            self.process(stub, name, int(self.rng.integers(1, 4)), learn=False)
        elif kind == "reset":
            self.reset(stub, name, int(self.rng.integers(0, 10_000)))
        elif kind == "reset_seedless":
            self.reset(stub, name, None)
        elif kind == "snapshot":
            self.snapshot(stub, name)
        elif kind == "restore" and ref.snapshots:
            self.restore(stub, name, str(self.rng.choice(sorted(ref.snapshots))))
        elif kind == "create" and len(self.models) < 3:
            self.create(stub)
        elif kind == "delete" and name != DEFAULT_MODEL:
            self.delete(stub, name)
        else:
            self.process(stub, name, 1)

    # -- the comparison ---------------------------------------------------------------------

    def check(self, stub) -> None:
        """Every model on the server equals its reference bit for bit (read through a
        Snapshot with weights, which the reference then records as well)."""
        listed = sorted(m.name for m in stub.ListModels(pb.ListModelsRequest(), timeout=60).models)
        assert listed == sorted(self.models), self.log
        for name, ref in self.models.items():
            model = stub.GetModel(pb.GetModelRequest(name=name), timeout=60).model
            assert [layer.seed for layer in model.config.layers] == ref.seeds, (name, self.log)
            assert model.step == ref.stack.engine.step, (name, self.log)
            for request_id in sorted(ref.window)[-2:]:  # resent: the first answer, no change
                x = np.zeros((1, ref.stack.engine.input_dim), np.float32)
                again = stub.Process(pb.ProcessRequest(model=name, samples=encode_samples(x),
                                                       request_id=request_id), timeout=60)
                assert (again.activations.raw, again.step) == ref.window[request_id], (
                    name, request_id, self.log)
            assert stub.GetModel(pb.GetModelRequest(name=name)).model.step == model.step
            response = self.snapshot(stub, name)
            expected = ref.stack.state_arrays()
            for index, layer in enumerate(response.layers):
                for field in HebbianState._fields:
                    key = state_key(index, field)
                    if field == "step":
                        assert layer.step == int(expected[key]), (key, self.log)
                        continue
                    got = decode_tensor(getattr(layer, field))
                    want = np.asarray(expected[key], np.float32).reshape(got.shape)
                    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (
                        name, key, float(np.abs(got - want).max()), self.log)


@pytest.mark.parametrize("seed", [20261201])
def test_recovery_after_sigkill_rebuilds_exactly_the_acknowledged_state(tmp_path, seed):
    server = ServerProcess(tmp_path, "--snapshot-keep", str(KEEP), "--wal-segment-bytes", "4096")
    run = Run(server, np.random.default_rng(seed))
    server.start()
    stub = run.stub()
    # the case of issue 15.1: a Reset seed must outlive a snapshot and a seedless Reset
    run.reset(stub, DEFAULT_MODEL, 7)
    run.snapshot(stub, DEFAULT_MODEL)
    run.reset(stub, DEFAULT_MODEL, None)
    run.process(stub, DEFAULT_MODEL, 10)
    for cycle in range(CYCLES):
        for _ in range(OPS_PER_CYCLE):  # the first cycle leaves the default model as it is
            run.random_op(stub, avoid=DEFAULT_MODEL if cycle == 0 else None)
        kill(server)
        server.start()
        stub = run.stub()
        run.check(stub)
    run.channel.close()
    assert server.stop() == 0
