"""The data directory across restarts of a real server: graceful stop, torn and corrupt
logs, a second server, a full disk (learning refused, reads served, also after a
restart, until space is back), and SIGKILL while snapshots are being written."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import grpc
import numpy as np
import pytest

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.client import encode_samples
from service.state.inspect import inspect_data_dir
from service.state.records import FRAME
from service.state.wal import segment_paths
from tests.durability.conftest import WIDTH, Sensor, kill, step_of
from tests.server_process import ServerProcess, health_status

RNG = np.random.default_rng(7)


def send(target: str, batches: int, size: int = 5, prefix: str = "b") -> int:
    """Process `batches` learning requests of `size` samples; returns samples acknowledged."""
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.HebbianServiceStub(channel)
        for i in range(batches):
            x = RNG.normal(size=(size, WIDTH)).astype(np.float32)
            stub.Process(pb.ProcessRequest(samples=encode_samples(x), request_id=f"{prefix}{i}"))
    return batches * size


def current_step(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return step_of(pb_grpc.HebbianServiceStub(channel))


def start_fails(server: ServerProcess) -> str:
    with pytest.raises(RuntimeError, match="exited with 1") as info:
        server.start()
    return str(info.value)


def test_graceful_shutdown_writes_a_final_snapshot_and_restart_replays_nothing(tmp_path):
    server = ServerProcess(tmp_path)
    server.start()
    acked = send(server.target, 20)
    assert server.stop() == 0
    (report,) = inspect_data_dir(server.data_dir)
    assert report.ok and report.snapshots[-1].step == acked and report.records_to_replay == 0
    server.start()
    assert current_step(server.target) == acked
    assert "snapshot 0000000000000020 + 0 log record(s)" in server.log_tail()
    assert server.stop() == 0


def test_a_second_server_on_the_same_data_directory_exits_with_a_clear_message(tmp_path):
    first = ServerProcess(tmp_path / "a")
    first.start()
    second = ServerProcess(tmp_path / "b")
    second.data_dir = first.data_dir
    try:
        message = start_fails(second)
        assert f"data directory {first.data_dir} is in use by another server" in message
        assert current_step(first.target) == 0  # the first one is unharmed
    finally:
        assert first.stop() == 0


def test_a_torn_last_record_is_dropped_and_only_it_is_lost(tmp_path):
    server = ServerProcess(tmp_path)
    server.start()
    acked = send(server.target, 10)
    kill(server)
    (segment,) = segment_paths(server.data_dir / "models/default/wal")
    data = segment.read_bytes()
    record = len(data) // 10  # ten records of the same size
    assert len(data) == 10 * record
    segment.write_bytes(data + data[-record:][:30])  # a cut-short eleventh record
    server.start()
    assert current_step(server.target) == acked
    assert "dropped a torn log tail" in server.log_tail()
    kill(server)
    segment.write_bytes(data[: len(data) - record + 17])  # cut inside the tenth record
    server.start()
    assert current_step(server.target) == acked - 5
    assert server.stop() == 0


def test_a_flipped_byte_in_an_earlier_record_refuses_to_start_naming_file_and_offset(tmp_path):
    server = ServerProcess(tmp_path)
    server.start()
    send(server.target, 10)
    kill(server)
    (segment,) = segment_paths(server.data_dir / "models/default/wal")
    data = bytearray(segment.read_bytes())
    data[40] ^= 0x10
    segment.write_bytes(bytes(data))
    message = start_fails(server)
    assert f"refusing to start: write-ahead log {segment} is corrupt at byte offset 0" in message


def test_a_missing_older_segment_refuses_to_start_naming_file_and_sequence(tmp_path):
    server = ServerProcess(tmp_path, "--wal-segment-bytes", "8192")
    server.start()
    send(server.target, 60)
    kill(server)
    paths = segment_paths(server.data_dir / "models/default/wal")
    assert len(paths) >= 3
    newest = paths[-1]
    data = newest.read_bytes()
    (length, _) = FRAME.unpack_from(data)
    newest.write_bytes(data[: FRAME.size + length])  # the newest segment holds one record
    paths[-2].unlink()  # and a gap before it: never mistaken for a torn tail
    first = int(newest.name.removesuffix(".wal"))
    message = start_fails(server)
    assert f"write-ahead log {newest} is corrupt at byte offset 0" in message
    assert f"the segment starts at sequence {first}" in message and "a gap" in message
    (report,) = inspect_data_dir(server.data_dir)  # check-data says the same
    assert not report.ok and any(f"starts at sequence {first}" in p for p in report.problems)


def test_sigkill_while_snapshots_are_written_never_uses_a_partial_snapshot(tmp_path):
    # A snapshot every 16 samples: kills land during snapshot writes too.
    server = ServerProcess(tmp_path, "--snapshot-every-samples", "16", "--snapshot-keep", "2")
    acknowledged = 0
    for cycle in range(5):
        server.start()
        step = current_step(server.target)
        assert step >= acknowledged
        acknowledged = step
        sensors = [Sensor(server.target, f"k{cycle}s{i}", seed=cycle * 3 + i) for i in range(3)]
        for sensor in sensors:
            sensor.start()
        time.sleep(RNG.uniform(0.3, 1.0))
        kill(server)
        for sensor in sensors:
            sensor.join(30)
        acknowledged += sum(s.acknowledged for s in sensors)
        (report,) = inspect_data_dir(server.data_dir)
        assert report.ok, report.problems
    server.start()
    assert current_step(server.target) >= acknowledged
    assert not list((server.data_dir / "models/default/snapshots").glob("*.tmp"))
    assert server.stop() == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 600 KiB tmpfs, so the log runs out of space for real (ENOSPC)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def metric(server: ServerProcess, name: str) -> float | None:
    """One unlabelled sample of the server's /metrics, None if absent."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    return None


def eventually(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def check_degraded(server: ServerProcess, stub) -> None:
    """On a full disk: learning refused with a clear UNAVAILABLE, reads served, readiness
    NOT_SERVING and hebbian_disk_full 1, the process alive."""
    x = RNG.normal(size=(3, WIDTH)).astype(np.float32)
    with pytest.raises(grpc.RpcError) as info:
        stub.Process(pb.ProcessRequest(samples=encode_samples(x), request_id="refused"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no space left" in info.value.details()
    assert "nothing was logged or applied" in info.value.details()
    assert eventually(lambda: health_status(server.target, "readiness") == "NOT_SERVING")
    assert eventually(lambda: metric(server, "hebbian_disk_full") == 1.0)
    assert metric(server, "hebbian_ready") == 0.0
    # reads: inference without an id, GetModel, ListModels, ListSnapshots
    answer = stub.Process(pb.ProcessRequest(samples=encode_samples(x), learn=False))
    assert answer.activations.shape == [3, 4]
    assert stub.ListModels(pb.ListModelsRequest()).models[0].name == "default"
    stub.ListSnapshots(pb.ListSnapshotsRequest())
    assert server.process.poll() is None


def test_a_full_disk_refuses_learning_serves_reads_and_recovers_when_space_is_back(
    tmp_path, small_disk
):
    server = ServerProcess(tmp_path)
    server.data_dir = small_disk / "data"
    server.start()
    acknowledged = 0
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.HebbianServiceStub(channel)
        size, i = 500, 0
        while size >= 1:  # 32 KB per request, then smaller ones until not even one fits
            x = RNG.normal(size=(size, WIDTH)).astype(np.float32)
            try:
                stub.Process(pb.ProcessRequest(samples=encode_samples(x), request_id=f"f{i}"))
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
                assert "no space left" in err.details()
                size //= 2
            else:
                acknowledged += size
            i += 1
        assert acknowledged > 0 and step_of(stub) == acknowledged
        check_degraded(server, stub)
        assert step_of(stub) == acknowledged

    kill(server)  # a restart on the still-full disk: no crash loop, the same degraded mode
    server.start()
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.HebbianServiceStub(channel)
        assert step_of(stub) == acknowledged
        check_degraded(server, stub)

        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        assert eventually(lambda: health_status(server.target, "readiness") == "SERVING")
        assert metric(server, "hebbian_disk_full") == 0.0
        x = RNG.normal(size=(5, WIDTH)).astype(np.float32)
        stub.Process(pb.ProcessRequest(samples=encode_samples(x), request_id="after"))
        assert step_of(stub) == acknowledged + 5
    assert server.stop() == 0
    server.start()
    assert current_step(server.target) == acknowledged + 5
    assert server.stop() == 0
