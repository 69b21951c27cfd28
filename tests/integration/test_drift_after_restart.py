"""`hebbian_layer_weight_drift_per_second` of a real server after a crash and restart:
recovery (log replay) is not learning, so the drift reads 0 until new samples arrive."""

from __future__ import annotations

import signal
import time
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from service.client import HebbianClient
from tests.server_process import ServerProcess

DRIFT = "hebbian_layer_weight_drift_per_second"


def drift(server: ServerProcess) -> float | None:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == DRIFT and sample.labels == {"model": "default", "layer": "0"}:
                return sample.value
    return None


def test_no_false_drift_after_a_sigkill_and_log_replay(tmp_path):
    rng = np.random.default_rng(3)
    server = ServerProcess(tmp_path)
    server.start()
    with HebbianClient(server.target, timeout=60) as client:
        for _ in range(10):
            client.process(rng.normal(size=(64, 16)).astype(np.float32))
        step = client.get_model().step
    assert step == 640
    server.process.send_signal(signal.SIGKILL)  # no final snapshot: restart replays the log
    server.process.wait(30)

    restarted = ServerProcess(tmp_path)  # the same data directory
    restarted.start()
    try:
        with HebbianClient(restarted.target, timeout=60) as client:
            assert client.get_model().step == 640  # the replayed state
            time.sleep(1.5)  # past the youngest age a drift is computed from
            assert drift(restarted) == 0.0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # learning again: now the kernel moves
                client.process(rng.normal(size=(64, 16)).astype(np.float32))
                value = drift(restarted)
                if value:
                    break
                time.sleep(0.2)
            assert value is not None and 0.0 < value < 1.0
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
