"""`hebbian serve` as a subprocess for tests: free ports, a temp data dir, readiness, SIGTERM.

    with ServerProcess(tmp_dir) as server:       # returns once readiness is SERVING
        HebbianClient(server.target).process(...)
    assert server.returncode == 0                 # stopped with SIGTERM

The server's output goes to `server.log_path`; a server that dies or never gets
ready fails with the tail of that log.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

# One implementation of these, shared with the benchmark's server processes; the tests
# import them from here.
from service.bench.procs import free_port, health_status, hebbian_command, stop_process

__all__ = ["ServerProcess", "free_port", "health_status", "hebbian_command"]

READY_TIMEOUT_S = 180.0


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
        # the server picks TensorFlow's log level itself (service/tf_noise.py)
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
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
        self.returncode = stop_process(self.process, timeout)
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
