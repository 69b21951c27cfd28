"""The real `hebbian serve` process: readiness, graceful SIGTERM, configuration errors."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from tests.server_process import ServerProcess, health_status, hebbian_command

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def sample(i: int) -> pb.StreamProcessRequest:
    return pb.StreamProcessRequest(samples=pb.Tensor(values=[float(i)] * 16), request_id=str(i))


def test_sigterm_turns_readiness_off_lets_a_stream_finish_and_exits_zero(tmp_path):
    server = ServerProcess(tmp_path, "--grace-period", "20")
    server.start()  # returns once readiness is SERVING
    try:
        assert health_status(server.target, "liveness") == "SERVING"
        channel = grpc.insecure_channel(server.target)
        readiness = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="readiness")
        )
        assert next(readiness).status == SERVING
        outbox: queue.Queue = queue.Queue()
        replies = pb_grpc.HebbianServiceStub(channel).StreamProcess(iter(outbox.get, None))
        outbox.put(sample(0))
        assert next(replies).request_id == "0"

        server.process.send_signal(signal.SIGTERM)

        assert next(readiness).status == NOT_SERVING
        readiness.cancel()
        outbox.put(sample(1))  # the in-flight stream is still served during the grace period
        assert next(replies).request_id == "1"
        assert new_calls_are_refused(server.target)
        outbox.put(None)
        assert list(replies) == []
        started = time.monotonic()
        assert server.process.wait(30) == 0, server.log_tail()
        assert time.monotonic() - started < 15  # did not sit out the whole grace period
        channel.close()
    finally:
        server.stop()
    assert "stopped" in server.log_tail()


def new_calls_are_refused(target: str, within: float = 10.0) -> bool:
    """Whether a new call gets UNAVAILABLE within `within` seconds (the server stops
    accepting right after readiness goes NOT_SERVING)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with grpc.insecure_channel(target) as fresh:
            try:
                pb_grpc.HebbianServiceStub(fresh).GetModel(pb.GetModelRequest(), timeout=5)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    return True
        time.sleep(0.05)
    return False


def run_serve(tmp_path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*hebbian_command(), "serve", *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--port", "99999"), {}, "flag --port must be a port in 0..65535; got 99999"),
        ((), {"HEBBIAN_WORKERS": "many"},
         "environment variable HEBBIAN_WORKERS must be an integer >= 1; got 'many'"),
        (("--config", "missing.toml"), {}, "cannot read config file missing.toml: No such"),
    ],
)
def test_invalid_configuration_exits_2_with_one_line(tmp_path, args, env, message):
    result = run_serve(tmp_path, *args, env=env)

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"hebbian serve: error: {message}")


def test_an_invalid_model_in_the_config_file_exits_2_before_listening(tmp_path):
    (tmp_path / "bad.toml").write_text(
        '[models.default]\ninput_dim = 4\nlayers = [{ units = 2, rule = "magic" }]\n'
    )

    result = run_serve(tmp_path, "--config", "bad.toml", "--port", "0", "--metrics-port", "0")

    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "hebbian serve: error: invalid config for model 'default': layer 0: rule")
    assert "magic" in last
    assert "Traceback" not in result.stderr
