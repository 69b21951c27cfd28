"""What a real `hebbian serve` writes to stderr: no TensorFlow/absl/CUDA start-up noise,
and with `--log-format json` nothing but JSON objects, one per line."""

from __future__ import annotations

import json
import os
import re
import subprocess

import numpy as np

from service.client import HebbianClient
from service.tf_noise import NOISE
from tests.server_process import ServerProcess, hebbian_command

# absl/glog C++ line prefixes: I1201 12:00:00.000 ..., E0000 00:00:..., W..., F...
NATIVE_LOG_LINE = re.compile(r"^[IWEF]\d{4} ")


def serve_once(workdir, *args: str, export: bool = False) -> str:
    """Start a server, learn and infer a few samples (and export the model with `hebbian
    export`, whose stderr must be empty), stop it; the server's whole stderr/stdout."""
    server = ServerProcess(workdir, *args)
    server.start()
    try:
        with HebbianClient(server.target, timeout=60) as client:
            client.process(np.ones((4, 16), np.float32))
            client.process(np.ones((2, 16), np.float32), learn=False)
        if export:
            env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
            exported = subprocess.run(
                [*hebbian_command(), "--target", server.target, "export",
                 "--out", str(workdir / "default.keras")],
                capture_output=True, text=True, timeout=300, env=env, check=False,
            )
            assert exported.returncode == 0, exported.stderr
            assert (workdir / "default.keras").stat().st_size > 0
            assert exported.stderr == ""
    finally:
        code = server.stop()
    log = server.log_path.read_text()
    assert code == 0, log[-4000:]
    return log


def test_serve_and_export_log_no_tensorflow_or_cuda_noise(tmp_path):
    log = serve_once(tmp_path, export=True)
    lines = log.splitlines()
    assert any(" INFO service.server.runtime: ready:" in line for line in lines), log
    assert [line for line in lines if NOISE.search(line) or NATIVE_LOG_LINE.match(line)] == []
    assert "cuda" not in log.lower() and "absl" not in log.lower()


def test_json_logs_are_one_json_object_per_line(tmp_path):
    log = serve_once(tmp_path, "--log-format", "json")
    records = []
    for number, line in enumerate(log.splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {line!r}\n{log[-4000:]}") from None
    assert records and all(isinstance(record, dict) for record in records)
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    messages = [record["message"] for record in records]
    assert any(message.startswith("ready:") for message in messages), messages
    assert messages[-1] == "stopped"
