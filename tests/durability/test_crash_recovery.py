"""Nothing acknowledged is ever lost: SIGKILL a real server at random moments while
concurrent sensor streams are learning, restart it, and check the state.

After every restart: every acknowledged sample is in the model's step, and the live
weights are bit-identical to replaying the recovered log on a fresh engine.
"""

from __future__ import annotations

import time

import grpc
import numpy as np

from service.api import hebbian_pb2_grpc as pb_grpc
from tests.durability.conftest import Replayer, Sensor, kill, live_kernel, step_of
from tests.server_process import ServerProcess

CYCLES = 20
STREAMS = 4


def test_sigkill_during_concurrent_streams_loses_no_acknowledged_sample(tmp_path):
    rng = np.random.default_rng(2026)
    # No snapshots during the run: the log keeps every record since creation, so the
    # whole history can be replayed offline and compared bit for bit.
    server = ServerProcess(tmp_path, "--snapshot-every-samples", "1000000000")
    replayer = Replayer(server.data_dir, tmp_path / "replay")
    acknowledged = sent = 0
    for cycle in range(CYCLES):
        server.start()
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.HebbianServiceStub(channel)
            step = step_of(stub)
            assert acknowledged <= step <= sent, (cycle, acknowledged, step, sent)
            kernel, replayed_step = replayer.catch_up()
            assert replayed_step == step
            assert np.array_equal(live_kernel(stub), kernel), cycle
        # Samples logged but unanswered when the server died may have been applied:
        # from here on they count as sent and recovered.
        acknowledged = sent = step
        sensors = [Sensor(server.target, f"c{cycle}s{i}", seed=cycle * 10 + i)
                   for i in range(STREAMS)]
        for sensor in sensors:
            sensor.start()
        time.sleep(rng.uniform(0.2, 1.0))
        kill(server)
        for sensor in sensors:
            sensor.join(30)
            assert sensor.error is not None and sensor.error.code() in (
                grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED
            ), sensor.error
        acknowledged += sum(s.acknowledged for s in sensors)
        sent += sum(s.sent for s in sensors)
        assert sum(s.acknowledged for s in sensors) > 0, f"cycle {cycle} learned nothing"
    server.start()
    with grpc.insecure_channel(server.target) as channel:
        assert step_of(pb_grpc.HebbianServiceStub(channel)) >= acknowledged
    assert server.stop() == 0
