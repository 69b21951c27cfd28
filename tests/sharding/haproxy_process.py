"""A real HAProxy (Debian's `haproxy` package, which `make test` installs as root) as a
subprocess for tests: a config in a temp directory, a free port, SIGTERM at the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from service.bench.procs import stop_process

START_TIMEOUT_S = 60.0


def haproxy_binary() -> Path:
    """haproxy on PATH, or skip the test saying how to install it."""
    found = shutil.which("haproxy")
    if found is None:
        pytest.skip("haproxy not found on PATH; `make test` (as root: apt-get install haproxy) "
                    "installs it")
    return Path(found)


def check_config(path: Path) -> subprocess.CompletedProcess:
    """`haproxy -c -f PATH`: does HAProxy accept the config?"""
    return subprocess.run([str(haproxy_binary()), "-c", "-f", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)


class HaproxyProcess:
    """`haproxy -db -f WORKDIR/haproxy.cfg`, started once `port` accepts connections."""

    def __init__(self, workdir: Path, config: str, port: int):
        self.workdir = Path(workdir)
        self.config_path = self.workdir / "haproxy.cfg"
        self.log_path = self.workdir / "haproxy.log"
        self.port = port
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config)
        self.process: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        """host:port of the router's frontend."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> HaproxyProcess:
        """Start HAProxy and wait until its frontend port accepts a TCP connection."""
        checked = check_config(self.config_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(haproxy_binary()), "-db", "-f", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.process.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"haproxy not listening on {self.port} after {START_TIMEOUT_S} s")

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) and wait."""
        if self.process is not None:
            stop_process(self.process, 10)

    def __enter__(self) -> HaproxyProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
