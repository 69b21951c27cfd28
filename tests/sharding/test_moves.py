"""Slot moves on loopback: three `hebbian serve` shards behind a real HAProxy whose map is
changed in place over its runtime API (`set map` on an admin socket).

Clients stream to six models through the router (request ids, resuming on UNAVAILABLE)
and send unary learning calls with their own ids (retried on UNAVAILABLE) while a slot
range holding three of the models moves from shard 0 to shard 2. Afterwards each model is
on exactly one shard (its new owner), its step is the count of acknowledged learning
samples (nothing lost), and a request id acknowledged on the old shard gets its original
answer from the new one (nothing applied twice). The RPCs of a move are checked one by
one too: a frozen model refuses writes and serves reads, an import where the slot is
owned or of a damaged snapshot is refused, and a move given up leaves the one writable
copy where it was. Every wait is for a state, with a generous deadline.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from service.cli import main as hebbian
from service.client import HebbianClient, HebbianError, ServerUnavailableError
from service.sharding.haproxy import render_config, render_map
from service.sharding.moves import move_slots, reassign
from service.sharding.slot_table import SlotTable
from service.sharding.slots import slot_of
from tests.server_process import ServerProcess, free_port
from tests.sharding.haproxy_process import HaproxyProcess, haproxy_binary

TABLE = SlotTable.even(3)  # 0-340 -> 0, 341-681 -> 1, 682-1023 -> 2
MOVED = (0, 169)  # part of shard 0's range moves to shard 2
TO = 2
CONFIG = {"input_dim": 6, "layers": [{"units": 3, "rule": "sanger", "learning_rate": 0.01,
                                      "seed": 1}]}
BATCH = 4
DEADLINE_S = 180.0


def _names() -> dict[str, list[str]]:
    """Three models in the moved slots, one elsewhere on shard 0, two on shard 1, and
    one model for the RPC checks (moved slots too, never streamed)."""
    want = {"moving": 4, "staying0": 1, "staying1": 2}
    found: dict[str, list[str]] = {kind: [] for kind in want}
    index = 0
    while any(len(found[k]) < n for k, n in want.items()):
        name, index = f"mv-{index}", index + 1
        slot = slot_of(name)
        kind = ("moving" if MOVED[0] <= slot <= MOVED[1] else
                "staying0" if TABLE.owner(slot) == 0 else
                "staying1" if TABLE.owner(slot) == 1 else None)
        if kind is not None and len(found[kind]) < want[kind]:
            found[kind].append(name)
    return found


NAMES = _names()
CHECKED = NAMES["moving"].pop()  # the RPC checks' model (its slot moves too)
MOVING = NAMES["moving"]
STREAMED = MOVING + NAMES["staying0"] + NAMES["staying1"]


@dataclass
class Cluster:
    shards: list[ServerProcess]
    router: HaproxyProcess
    table_path: object
    map_path: object
    socket_path: str

    def connect(self, shard: int) -> HebbianClient:
        return HebbianClient(self.shards[shard].target, timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    haproxy_binary()
    root = tmp_path_factory.mktemp("moves")
    table = root / "slots.yaml"
    table.write_text(TABLE.to_yaml())
    shards = [ServerProcess(root / f"shard-{i}", "--slot-table", str(table), "--shard", str(i),
                            "--data-dir", str(root / f"shard-{i}" / "data"))
              for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda shard: shard.start(), shards))
    (root / "router").mkdir()
    map_path = root / "router" / "slots.map"
    map_path.write_text(render_map(TABLE))
    socket_path = str(root / "router" / "admin.sock")
    port = free_port()
    config = render_config({i: s.target for i, s in enumerate(shards)},
                           bind=f"127.0.0.1:{port}", map_file=str(map_path),
                           admin_socket=socket_path)
    router = HaproxyProcess(root / "router", config, port).start()
    try:
        with HebbianClient(router.target, timeout=60) as client:
            for name in [*STREAMED, CHECKED]:
                client.create_model(name, CONFIG)
        yield Cluster(shards, router, table, map_path, socket_path)
    finally:
        router.stop()
        for shard in shards:
            if shard.process is not None and shard.process.poll() is None:
                shard.stop()


def _held(cluster: Cluster) -> list[set[str]]:
    held = []
    for shard in range(3):
        with cluster.connect(shard) as client:
            held.append({model.name for model in client.list_models()})
    return held


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE_S:.0f} s: {what}"
        time.sleep(0.2)


# -- the RPCs one by one (before the move: CHECKED lives on shard 0) ---------------------

def test_a_frozen_model_refuses_writes_serves_reads_and_a_move_given_up_leaves_it_writable(
        cluster):
    with cluster.connect(0) as source:
        before = source.process_full(np.ones((2, 6)), model=CHECKED, request_id="chk-1")
        exported = source.export_model(CHECKED, TO)
        assert exported.step == before.step == 2 and exported.name == CHECKED
        with pytest.raises(ServerUnavailableError) as caught:  # retried, then given up
            source.process(np.ones((1, 6)), model=CHECKED)
        assert f"is moving to shard {TO}" in str(caught.value)
        with pytest.raises(ServerUnavailableError):
            source.reset(CHECKED)
        assert source.get_model(CHECKED).step == 2  # reads are served
        with pytest.raises(HebbianError) as caught:
            source.delete_model(CHECKED)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE

        with cluster.connect(0) as owner:  # an import where the slot is owned: refused
            with pytest.raises(HebbianError) as caught:
                owner.import_model(exported, 0)
            assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        with cluster.connect(TO) as target:
            damaged = type(exported)()
            damaged.CopyFrom(exported)
            damaged.snapshot = exported.snapshot[:-1] + bytes([exported.snapshot[-1] ^ 1])
            with pytest.raises(HebbianError) as caught:
                target.import_model(damaged, 0)
            assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "checksum" in caught.value.details
            target.import_model(exported, 0)  # accepted: not writable there (not owned)
            with pytest.raises(ServerUnavailableError) as caught:
                target.process(np.ones((1, 6)), model=CHECKED)
            assert "is arriving from shard 0" in str(caught.value)
            target.release_model(CHECKED)  # the move is given up: the import goes
        source.unfreeze_model(CHECKED)
        assert source.process_full(np.ones((1, 6)), model=CHECKED).step == 3
    held = _held(cluster)
    assert [CHECKED in models for models in held] == [True, False, False]


# -- a move while clients stream ---------------------------------------------------------

@dataclass
class Feed:
    """A stream's batches: some before the move, as many as come during it, some after."""

    started: threading.Event = field(default_factory=threading.Event)
    moved: threading.Event = field(default_factory=threading.Event)
    before: int = 5
    after: int = 5

    def batches(self, seed: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)
        for _ in range(self.before):
            yield rng.normal(size=(BATCH, 6)).astype(np.float32)
        self.started.set()
        while not self.moved.is_set():
            yield rng.normal(size=(BATCH, 6)).astype(np.float32)
            time.sleep(0.05)
        for _ in range(self.after):
            yield rng.normal(size=(BATCH, 6)).astype(np.float32)


def _stream(router: str, name: str, feed: Feed, seed: int) -> int:
    """Stream through the router until the feed ends; the answers received."""
    with HebbianClient(router, timeout=60, reconnect_timeout=DEADLINE_S) as client:
        return sum(1 for _ in client.stream_full(feed.batches(seed), model=name, window=8))


def _unary(router: str, name: str, feed: Feed, answers: dict) -> None:
    """Learning calls with own ids, each retried with the same id until acknowledged."""
    with HebbianClient(router, timeout=60) as client:
        count = 0
        while count < feed.before or not feed.moved.is_set():
            request_id = f"{name}-{uuid.uuid4().hex}"
            samples = np.full((1, 6), count % 7, np.float32)
            deadline = time.monotonic() + DEADLINE_S
            while True:
                try:
                    answers[request_id] = client.process_full(samples, model=name,
                                                              request_id=request_id)
                    break
                except ServerUnavailableError:
                    assert time.monotonic() < deadline, "not acknowledged in time"
                    time.sleep(0.2)
            count += 1
            if count == feed.before:
                feed.started.set()
            time.sleep(0.05)


def test_a_slot_range_moves_while_clients_stream_nothing_lost_nothing_twice(cluster):
    steps_before = {}
    with HebbianClient(cluster.router.target, timeout=60) as client:
        for name in STREAMED:
            steps_before[name] = client.get_model(name).step
    feeds = {name: Feed() for name in STREAMED}
    unary_feed = Feed()
    unary_answers: dict = {}
    with ThreadPoolExecutor(len(STREAMED) + 1) as pool:
        streams = {name: pool.submit(_stream, cluster.router.target, name, feeds[name], i)
                   for i, name in enumerate(STREAMED)}
        unary = pool.submit(_unary, cluster.router.target, MOVING[0], unary_feed, unary_answers)
        for feed in [*feeds.values(), unary_feed]:
            assert feed.started.wait(DEADLINE_S)
        try:
            report = move_slots(cluster.connect, 3, cluster.table_path, *MOVED, TO,
                                router_socket=cluster.socket_path,
                                router_map=str(cluster.map_path), wait_s=DEADLINE_S)
        finally:
            for feed in [*feeds.values(), unary_feed]:
                feed.moved.set()
        answered = {name: future.result(timeout=DEADLINE_S) for name, future in streams.items()}
        unary.result(timeout=DEADLINE_S)

    assert sorted(name for name, _, _ in report.moved) == sorted([*MOVING, CHECKED])
    assert {source for _, source, _ in report.moved} == {0}
    assert SlotTable.load(cluster.table_path) == reassign(TABLE, *MOVED, TO)
    assert cluster.map_path.read_text() == render_map(reassign(TABLE, *MOVED, TO))

    held = _held(cluster)  # each model on exactly one shard: its owner by the new table
    for name in [*STREAMED, CHECKED]:
        owner = TO if name in [*MOVING, CHECKED] else TABLE.owner(slot_of(name))
        assert [name in models for models in held] == [s == owner for s in range(3)], name

    with HebbianClient(cluster.router.target, timeout=60) as client:
        for name in STREAMED:  # nothing acknowledged lost, nothing applied twice
            learned = answered[name] * BATCH + (len(unary_answers) if name == MOVING[0] else 0)
            assert client.get_model(name).step == steps_before[name] + learned, name
        first_id, first = next(iter(unary_answers.items()))  # acknowledged on shard 0
        step = client.get_model(MOVING[0]).step
        again = client.process_full(np.full((1, 6), 0, np.float32), model=MOVING[0],
                                    request_id=first_id)
        assert again.step == first.step  # the original answer, from shard 2's window
        np.testing.assert_array_equal(again.activations, first.activations)
        assert client.get_model(MOVING[0]).step == step  # not applied again


def test_a_call_straight_to_the_old_shard_is_refused_naming_the_new_owner(cluster):
    name = MOVING[0]
    _wait_for(lambda: name not in _held(cluster)[0], "the old copy is gone")
    with cluster.connect(0) as client:
        with pytest.raises(HebbianError) as caught:
            client.process(np.zeros((1, 6)), model=name)
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert f"belongs to shard {TO}, this is shard 0" in caught.value.details


def test_the_cli_moves_slots_back_and_says_what_it_did(cluster, capsys):
    targets = ",".join(shard.target for shard in cluster.shards)
    assert hebbian(["shards", "move", "--targets", targets, "--slot-table",
                    str(cluster.table_path), "--slots", f"{MOVED[0]}-{MOVED[1]}", "--to", "0",
                    "--router-socket", cluster.socket_path, "--router-map",
                    str(cluster.map_path)]) == 0
    out = capsys.readouterr().out
    assert f"slots {MOVED[0]}-{MOVED[1]} -> shard 0: {len(MOVING) + 1} model(s) moved" in out
    assert SlotTable.load(cluster.table_path) == TABLE
    held = _held(cluster)
    assert all(name in held[0] and name not in held[TO] for name in MOVING)
    with HebbianClient(cluster.router.target, timeout=60) as client:
        for name in MOVING:  # through the router again, on shard 0
            assert client.process_full(np.ones((1, 6)), model=name).model == name
