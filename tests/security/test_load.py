"""The real `hebbian serve` process under load, a slow consumer and hostile names.

One server subprocess, configured as in production by flags (mutual TLS, a token file,
a plaintext health-only port; default limits: 32 streams, 64 workers; a data directory
with the write-ahead log fsynced before every answer), serves, in order:

- readiness on the health port, while the main port refuses plaintext; a start-up log
  that states the posture and holds no token;
- hostile names and snapshot ids: refused, and nothing outside the data directory is
  read, written or deleted;
- load: 32 concurrent streams plus unary callers for `LOAD_SECONDS`: no lost update
  (final step == learning samples acknowledged), only the expected errors (bad requests
  planted on purpose, a 33rd stream), server RSS growth < 10% from the first to the
  last quarter of the run (after a short warm-up);
- a slow consumer: a stream whose client never reads an answer: gRPC flow control
  stops it (the client can no longer send) and the server's memory stays put.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.client import HebbianClient, HebbianError, tls_credentials
from tests.security.certs import Pki
from tests.security.conftest import raw
from tests.server_process import ServerProcess, free_port, health_status

STREAMS, UNARY_CALLERS = 32, 4
WARM_UP_SECONDS, LOAD_SECONDS = 3.0, 20.0
BATCH = 16  # samples per stream message
WIDTH = 16
ADMIN_TOKEN = "load-admin-" + "9f8e7d6c" * 4
PROCESS_TOKEN = "load-process-" + "5b4a3928" * 4


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class RssSampler:
    """Samples a process's RSS every `interval` seconds on a thread."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), rss_bytes(self.pid)))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, stop: float) -> list[int]:
        return [rss for t, rss in self.samples if start <= t <= stop]


@pytest.fixture(scope="module")
def server(tmp_path_factory, pki: Pki) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("load")
    bait = workdir / "outside"
    bait.mkdir()
    (bait / "0000000000000001.hsnap").write_bytes(b"not yours")
    (bait / "config.json").write_text("{}")
    secrets = tmp_path_factory.mktemp("secrets")
    token_file = secrets / "tokens"
    token_file.write_text(f"admin {ADMIN_TOKEN}\nprocess {PROCESS_TOKEN}\n")
    token_file.chmod(0o600)
    process = ServerProcess(
        workdir, "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca), "--token-file", str(token_file),
        "--health-port", str(free_port()),
    )
    with process:  # ready: probed in plaintext on the health port
        yield process
    assert process.returncode == 0, process.log_tail()


@pytest.fixture(scope="module")
def credentials(pki: Pki) -> grpc.ChannelCredentials:
    return tls_credentials(pki.ca, pki.client_cert, pki.client_key)


def client(server: ServerProcess, credentials, token: str = PROCESS_TOKEN) -> HebbianClient:
    return HebbianClient(server.target, credentials=credentials, token=token, timeout=60)


def admin_stub(server: ServerProcess, credentials) -> tuple[grpc.Channel, object, tuple]:
    """(channel, stub, metadata) for calls with the admin token."""
    channel = grpc.secure_channel(server.target, credentials)
    admin = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    return channel, pb_grpc.HebbianServiceStub(channel), admin


def test_the_main_port_needs_mutual_tls_and_the_log_states_the_posture(server, credentials):
    assert health_status(server.probe_target, "readiness") == "SERVING"
    assert health_status(server.target, "readiness") == "UNAVAILABLE"  # plaintext refused
    with client(server, credentials) as c:
        assert c.get_model().name == "default"
    log = server.log_tail(1 << 20)
    assert "mutual TLS" in log and "token auth on: 1 admin and 1 process" in log
    assert ADMIN_TOKEN not in log and PROCESS_TOKEN not in log


def tree(root: Path) -> dict[str, tuple[int, float]]:
    """Every file under `root` with its size and modification time."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime)
        for p in sorted(root.rglob("*")) if p.is_file()
    }


HOSTILE = ["../outside", "../../etc", "/etc/passwd", "..", "outside/../x", "a/b", "ｄｅｆａｕｌｔ",
           "default\u200b", "defau\u0301lt", "x" * 300, "models/../../outside"]


def test_hostile_names_and_snapshot_ids_touch_nothing_outside_the_data_directory(
    server, credentials
):
    workdir = server.workdir
    outside_before = tree(workdir / "outside")
    config = pb.ModelConfig(input_dim=2, layers=[pb.LayerConfig(units=1)])
    channel, stub, admin = admin_stub(server, credentials)
    with channel:
        calls = [
            (stub.CreateModel, lambda n: pb.CreateModelRequest(name=n, config=config)),
            (stub.GetModel, lambda n: pb.GetModelRequest(name=n)),
            (stub.DeleteModel, lambda n: pb.DeleteModelRequest(name=n)),
            (stub.Reset, lambda n: pb.ResetRequest(name=n)),
            (stub.Snapshot, lambda n: pb.SnapshotRequest(name=n)),
            (stub.ListSnapshots, lambda n: pb.ListSnapshotsRequest(name=n)),
            (stub.Restore, lambda n: pb.RestoreRequest(name=n, snapshot_id="1")),
            (stub.Process, lambda n: pb.ProcessRequest(model=n, samples=raw(np.zeros((1, 16))))),
        ]
        for (method, request), name in itertools.product(calls, HOSTILE):
            with pytest.raises(grpc.RpcError) as info:
                method(request(name), metadata=admin, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, name)
        for snapshot_id in ["../../outside/0000000000000001", "/etc/passwd", "..", "１", "¹"]:
            with pytest.raises(grpc.RpcError) as info:
                stub.Restore(
                    pb.RestoreRequest(snapshot_id=snapshot_id), metadata=admin, timeout=10
                )
            assert info.value.code() in (
                grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
            ), snapshot_id
    assert tree(workdir / "outside") == outside_before
    assert sorted(p.name for p in workdir.iterdir()) == ["data", "outside", "server.log"]
    assert sorted(p.name for p in (workdir / "data" / "models").iterdir()) == ["default"]


class Tally:
    """What the clients saw: learning samples acknowledged, errors by kind."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.learned = 0
        self.expected_errors: dict[str, int] = {}
        self.unexpected: list[str] = []

    def acked(self, samples: int) -> None:
        with self.lock:
            self.learned += samples

    def error(self, kind: str, expected: bool) -> None:
        with self.lock:
            if expected:
                self.expected_errors[kind] = self.expected_errors.get(kind, 0) + 1
            else:
                self.unexpected.append(kind)


def stream_worker(server, credentials, seed: int, stop: threading.Event, tally: Tally) -> None:
    rng = np.random.default_rng(seed)

    def batches() -> Iterator[np.ndarray]:
        while not stop.is_set():
            yield rng.normal(size=(BATCH, WIDTH)).astype(np.float32)

    try:
        with client(server, credentials) as c:
            for result in c.stream_full(batches(), window=8):
                tally.acked(BATCH - len(result.skipped))
    except HebbianError as err:
        tally.error(f"stream {err}", expected=False)


def unary_worker(server, credentials, seed: int, stop: threading.Event, tally: Tally) -> None:
    rng = np.random.default_rng(seed)
    with client(server, credentials) as c:
        for i in itertools.count():
            if stop.is_set():
                return
            try:
                if i % 10 == 9:  # a planted bad request: wrong width
                    try:
                        c.process(np.zeros(WIDTH + 1))
                    except HebbianError as err:
                        tally.error(err.code.name, expected=err.code.name == "INVALID_ARGUMENT")
                    continue
                learn = bool(i % 3)
                result = c.process_full(rng.normal(size=(4, WIDTH)), learn=learn)
                if learn:
                    tally.acked(4 - len(result.skipped))
                if i % 7 == 0:
                    c.get_model()
            except HebbianError as err:
                tally.error(f"unary {err}", expected=False)


def one_stream_too_many(server, credentials, tally: Tally) -> None:
    with client(server, credentials) as c:
        try:
            list(c.stream_full([np.zeros((1, WIDTH))]))
            tally.error("a 33rd stream was accepted", expected=False)
        except HebbianError as err:
            tally.error(err.code.name, expected=err.code.name == "RESOURCE_EXHAUSTED")


def test_32_streams_and_unary_callers_lose_no_update_and_do_not_grow_memory(
    server, credentials
):
    tally, stop = Tally(), threading.Event()
    workers = [
        threading.Thread(target=stream_worker, args=(server, credentials, s, stop, tally))
        for s in range(STREAMS)
    ] + [
        threading.Thread(target=unary_worker, args=(server, credentials, 100 + u, stop, tally))
        for u in range(UNARY_CALLERS)
    ]
    with client(server, credentials) as c:
        step_before = c.get_model().step
    with RssSampler(server.process.pid) as rss:
        started = time.monotonic()
        for worker in workers:
            worker.start()
        time.sleep(WARM_UP_SECONDS + LOAD_SECONDS / 2)
        one_stream_too_many(server, credentials, tally)
        time.sleep(LOAD_SECONDS / 2)
        stop.set()
        ended = time.monotonic()
        for worker in workers:
            worker.join(120)
    assert not any(worker.is_alive() for worker in workers)

    assert tally.unexpected == []
    assert tally.expected_errors.get("RESOURCE_EXHAUSTED") == 1  # the 33rd stream
    assert tally.expected_errors.get("INVALID_ARGUMENT", 0) > 0  # the planted bad requests
    with client(server, credentials) as c:
        assert c.get_model().step - step_before == tally.learned  # no lost update
    assert tally.learned > 0
    measured = started + WARM_UP_SECONDS
    quarter = (ended - measured) / 4
    first = statistics.median(rss.between(measured, measured + quarter))
    last = statistics.median(rss.between(ended - quarter, ended))
    print(f"load: {tally.learned} samples learned in {ended - started:.0f} s, expected errors "
          f"{tally.expected_errors}, server RSS {first / 2**20:.0f} -> {last / 2**20:.0f} MiB")
    assert last < 1.10 * first, f"RSS grew from {first / 2**20:.0f} to {last / 2**20:.0f} MiB"
    assert health_status(server.probe_target, "readiness") == "SERVING"


def settles(value, quiet: float, timeout: float) -> bool:
    """Whether `value()` stops changing for `quiet` seconds within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
    return False


def test_a_client_that_stops_reading_is_held_back_and_memory_stays_bounded(
    server, credentials
):
    sent = itertools.count()
    counted = [0]
    payload = raw(np.ones((64, WIDTH), np.float32))

    def messages() -> Iterator[pb.StreamProcessRequest]:
        while True:  # as fast as gRPC lets it
            counted[0] = next(sent) + 1
            yield pb.StreamProcessRequest(samples=payload, learn=False)

    token = (("authorization", f"Bearer {PROCESS_TOKEN}"),)
    with grpc.secure_channel(server.target, credentials) as channel:
        call = pb_grpc.HebbianServiceStub(channel).StreamProcess(
            messages(), metadata=token, timeout=120
        )
        # never read an answer: the client soon cannot send any more
        assert settles(lambda: counted[0], quiet=2.0, timeout=30.0), counted[0]
        early_count, early_rss = counted[0], rss_bytes(server.process.pid)
        time.sleep(4)
        late_count, late_rss = counted[0], rss_bytes(server.process.pid)
        call.cancel()

    print(f"slow consumer: {early_count} -> {late_count} messages sent, server RSS "
          f"{early_rss / 2**20:.0f} -> {late_rss / 2**20:.0f} MiB")
    # held back after the flow-control windows filled (a few MiB: answers the client
    # does not read, messages the server does not take); only window updates trickle on
    assert early_count < 20_000, early_count
    assert late_count - early_count <= max(50, early_count // 100), (early_count, late_count)
    assert late_rss < early_rss + 20 * 2**20
    with client(server, credentials) as c:  # still healthy, slot released
        assert len(list(c.stream_full([np.zeros((1, WIDTH))] * 3))) == 3
    assert health_status(server.probe_target, "readiness") == "SERVING"
