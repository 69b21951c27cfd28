"""One `hebbian serve` subprocess shared by the end-to-end tests, and the real grpcurl."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.grpcurl import GrpcurlResult, grpcurl_binary
from tests.server_process import ServerProcess


@pytest.fixture(scope="session")
def hebbian_server(tmp_path_factory):
    """A real `hebbian serve` on free ports; at the end SIGTERM must give exit code 0."""
    server = ServerProcess(tmp_path_factory.mktemp("e2e-server"))
    server.start()
    yield server
    code = server.stop()
    assert code == 0, f"hebbian serve exited with {code} after SIGTERM:\n{server.log_tail()}"


@pytest.fixture(scope="session")
def grpcurl():
    """Runs the real grpcurl with -plaintext: grpcurl(*args, stdin=None) -> GrpcurlResult."""
    binary = grpcurl_binary()

    def run(*args: str, stdin: str | None = None) -> GrpcurlResult:
        completed = subprocess.run(
            [str(binary), "-plaintext", *args],
            input=stdin, capture_output=True, text=True, timeout=60, check=False,
        )
        return GrpcurlResult(completed.returncode, completed.stdout, completed.stderr)

    return run
