"""Three `hebbian serve` shards behind a real HAProxy on loopback.

A client creates and streams to 12 models through the router; each model lives on
exactly the shard the slot table names; a call sent straight to the wrong shard is
refused; a SIGKILLed shard's models answer UNAVAILABLE through the router while the
others keep serving, and after its restart nothing acknowledged is lost. The CLI lists
the models of all shards and their status. Every wait is for a state, with a generous
deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.cli import main as hebbian
from service.client import HebbianClient, HebbianError, encode_samples
from service.sharding.haproxy import render_config, render_map
from service.sharding.slot_table import SlotTable
from tests.server_process import ServerProcess, free_port
from tests.sharding.haproxy_process import HaproxyProcess, haproxy_binary
from tests.sharding.names import names_per_shard

TABLE = SlotTable.even(3)
NAMES = names_per_shard(TABLE, 4, prefix="sensor")  # 4 models per shard, 12 in all
MODELS = [name for shard in sorted(NAMES) for name in NAMES[shard]]
CONFIG = {"input_dim": 6, "layers": [{"units": 3, "rule": "sanger", "learning_rate": 0.01,
                                      "seed": 1}]}
BATCHES, BATCH = 10, 8  # per model: 10 stream messages of 8 samples
DEADLINE_S = 120.0


class Cluster:
    """The shards (ordinal = index), the router, and the table file they share."""

    def __init__(self, shards: list[ServerProcess], router: HaproxyProcess):
        self.shards = shards
        self.router = router

    def shard_of(self, name: str) -> int:
        """The shard that owns model `name` by the table."""
        return next(shard for shard, names in NAMES.items() if name in names)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    """Three shards started in parallel, then HAProxy routing to them."""
    haproxy_binary()  # skip early without HAProxy
    root = tmp_path_factory.mktemp("cluster")
    table = root / "slots.yaml"
    table.write_text(TABLE.to_yaml())
    shards = [ServerProcess(root / f"shard-{i}", "--slot-table", str(table), "--shard", str(i),
                            "--data-dir", str(root / f"shard-{i}" / "data"))
              for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda shard: shard.start(), shards))
    (root / "router").mkdir()
    (root / "router" / "slots.map").write_text(render_map(TABLE))
    port = free_port()
    config = render_config({i: s.target for i, s in enumerate(shards)},
                           bind=f"127.0.0.1:{port}",
                           map_file=str(root / "router" / "slots.map"))
    router = HaproxyProcess(root / "router", config, port).start()
    try:
        yield Cluster(shards, router)
    finally:
        router.stop()
        for shard in shards:
            if shard.process is not None and shard.process.poll() is None:
                shard.stop()


@pytest.fixture(scope="module")
def streamed(cluster) -> dict[str, int]:
    """Through the router: create the 12 models, stream to each; its acknowledged step."""
    steps = {}
    with HebbianClient(cluster.router.target, timeout=60) as client:
        for name in MODELS:
            client.create_model(name, CONFIG)
        rng = np.random.default_rng(0)
        for name in MODELS:
            batches = [rng.normal(size=(BATCH, 6)).astype(np.float32) for _ in range(BATCHES)]
            results = list(client.stream_full(batches, model=name))
            assert [r.model for r in results] == [name] * BATCHES
            steps[name] = results[-1].step
    assert set(steps.values()) == {BATCHES * BATCH}
    return steps


def _models_on(shard: ServerProcess) -> set[str]:
    with HebbianClient(shard.target, timeout=30) as client:
        return {model.name for model in client.list_models()}


def test_each_model_lives_on_exactly_the_shard_that_owns_its_slot(cluster, streamed):
    held = [_models_on(shard) for shard in cluster.shards]
    for name in MODELS:
        assert [name in models for models in held].count(True) == 1, (name, held)
        assert name in held[cluster.shard_of(name)]
    assert "default" in held[TABLE.owner(223)]  # the default model only on its owner


def test_a_call_without_the_header_goes_to_the_default_models_shard(cluster, streamed):
    with grpc.insecure_channel(cluster.router.target) as channel:
        stub = pb_grpc.HebbianServiceStub(channel)
        for _ in range(5):  # whichever connection: always the owner of "default"
            model = stub.GetModel(pb.GetModelRequest(), timeout=30).model
            assert model.name == "default" and model.is_default


def test_a_call_sent_straight_to_the_wrong_shard_is_refused(cluster, streamed):
    name = NAMES[1][0]
    with HebbianClient(cluster.shards[2].target, timeout=30) as client:
        with pytest.raises(HebbianError) as caught:
            client.process(np.zeros((1, 6)), model=name)
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "belongs to shard 1, this is shard 2" in caught.value.details
        with pytest.raises(HebbianError) as caught:
            client.create_model(name, CONFIG)  # never a second copy
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_cli_lists_the_models_of_every_shard_and_their_status(cluster, streamed, capsys):
    targets = ",".join(shard.target for shard in cluster.shards)
    assert hebbian(["models", "list", "--targets", targets, "--json"]) == 0
    listed = {entry["name"]: entry["shard"] for entry in json.loads(capsys.readouterr().out)}
    assert {name: listed[name] for name in MODELS} == {n: cluster.shard_of(n) for n in MODELS}
    assert hebbian(["shards", "status", "--targets", targets, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [entry["reachable"] for entry in status] == [True] * 3


def _router_call(cluster: Cluster, name: str, timeout: float = 10) -> grpc.RpcError | None:
    """One inference call for `name` through the router, no retries; its error or None."""
    with grpc.insecure_channel(cluster.router.target) as channel:
        stub = pb_grpc.HebbianServiceStub(channel)
        request = pb.ProcessRequest(model=name, learn=False,
                                    samples=encode_samples(np.zeros((1, 6), np.float32)))
        try:
            stub.Process(request, timeout=timeout, metadata=(("x-hebbian-model", name),))
        except grpc.RpcError as error:
            return error
    return None


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S:.0f} s: {what}"
        time.sleep(0.2)


def test_a_killed_shard_is_unavailable_the_others_serve_and_nothing_is_lost(cluster, streamed):
    victim = cluster.shards[1]
    victim.process.kill()  # SIGKILL: no final snapshot, recovery from the log
    victim.process.wait()
    for name in NAMES[1]:
        error = _router_call(cluster, name)
        assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE, error
    for name in NAMES[0] + NAMES[2]:
        assert _router_call(cluster, name) is None
    with HebbianClient(cluster.router.target, timeout=30) as client:
        assert client.process(np.ones((2, 6)), model=NAMES[0][0]).shape == (2, 3)

    victim.start()  # same ports, same data directory
    _wait_for(lambda: _router_call(cluster, NAMES[1][0]) is None, "the router reaches shard 1")
    with HebbianClient(cluster.router.target, timeout=30) as client:
        for name in NAMES[1]:
            assert client.get_model(name).step == streamed[name]
