"""`hebbian serve` as a subprocess for tests: free ports, a temp data dir, readiness, SIGTERM.

    with ServerProcess(tmp_dir) as server:       # returns once readiness is SERVING
        HebbianClient(server.target).process(...)
    assert server.returncode == 0                 # stopped with SIGTERM

The server's output goes to `server.log_path`; a server that dies or never gets
ready fails with the tail of that log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BIN_DIR = Path(sys.executable).parent
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hebbian_command() -> list[str]:
    """The installed `hebbian` console script (or `python -m service.cli` without it)."""
    script = shutil.which("hebbian", path=str(BIN_DIR))
    return [script] if script else [sys.executable, "-m", "service.cli"]


def health_status(target: str, service: str, timeout: float = 2.0) -> str:
    """grpc.health.v1 Check of `service` as a status name, or the error code's name."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


class ServerProcess:
    """One `hebbian serve` subprocess on 127.0.0.1 with free ports and its own data dir."""

    def __init__(self, workdir: Path, *extra_args: str):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.metrics_port = free_port()
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "server.log"
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None

    @property
    def target(self) -> str:
        """host:port of the gRPC server."""
        return f"127.0.0.1:{self.port}"

    @property
    def probe_target(self) -> str:
        """Where readiness is probed in plaintext: the `--health-port` if given, else `target`."""
        args = list(self.extra_args)
        if "--health-port" in args:
            return f"127.0.0.1:{args[args.index('--health-port') + 1]}"
        return self.target

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Starts the server and waits until its readiness service is SERVING."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            *hebbian_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--metrics-port", str(self.metrics_port), "--data-dir", str(self.data_dir),
            *self.extra_args,
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"hebbian serve exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if health_status(self.probe_target, "readiness", timeout=1.0) == "SERVING":
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"hebbian serve not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> int:
        """Sends SIGTERM and waits for the exit; returns (and keeps) the exit code."""
        if self.process is None:
            raise RuntimeError("the server was not started")
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.returncode = self.process.returncode
        return self.returncode

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's combined stdout/stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
