"""The CLI's durable side against a real server: snapshot, snapshots, restore, export,
and the offline check-data report."""

from __future__ import annotations

import json
import subprocess

import grpc
import keras
import numpy as np

from service.api import hebbian_pb2_grpc as pb_grpc
from service.client import HebbianClient
from tests.durability.conftest import WIDTH, live_kernel
from tests.server_process import ServerProcess, hebbian_command


def hebbian(*args: str, target: str | None = None) -> subprocess.CompletedProcess:
    command = [*hebbian_command(), *(["--target", target] if target else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_export_snapshot_restore_and_check_data(tmp_path):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, WIDTH)).astype(np.float32)
    server = ServerProcess(tmp_path)
    server.start()
    with HebbianClient(server.target) as client, grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.HebbianServiceStub(ch)
        client.process(x[:200])
        taken = hebbian("snapshot", target=server.target)
        assert taken.returncode == 0, taken.stderr
        snapshot_id = taken.stdout.split()[1]
        assert "at step 200" in taken.stdout
        client.process(x[200:250])
        listed = hebbian("snapshots", target=server.target)
        assert snapshot_id in listed.stdout

        out = tmp_path / "default.keras"
        exported = hebbian("export", "-m", "default", "--out", str(out), "--json",
                           target=server.target)
        assert exported.returncode == 0, exported.stderr
        answer = json.loads(exported.stdout)
        assert (answer["model"], answer["step"], answer["path"]) == ("default", 250, str(out))
        from service.model import Hebbian  # registers the layer class with Keras

        model = keras.models.load_model(out, custom_objects={"Hebbian": Hebbian})
        assert int(model.layers[0].step.numpy()) == 250
        assert np.array_equal(model.layers[0].kernel.numpy(), live_kernel(stub))
        # the exported model keeps learning like the server does
        model.predict(x[250:], verbose=0)
        client.process(x[250:])
        np.testing.assert_allclose(model.layers[0].kernel.numpy(), live_kernel(stub), atol=1e-5)

        restored = hebbian("restore", snapshot_id, target=server.target)
        assert restored.returncode == 0, restored.stderr
        assert client.get_model().step == 200
    assert server.stop() == 0

    report = hebbian("check-data", str(server.data_dir))
    assert report.returncode == 0, report.stdout + report.stderr
    assert "model default: ok" in report.stdout and "0 record(s) to replay" in report.stdout
    (segment,) = (server.data_dir / "models/default/wal").glob("*.wal")
    data = bytearray(segment.read_bytes())
    if data:
        data[10] ^= 1
        segment.write_bytes(bytes(data) + bytes(data))
        damaged = hebbian("check-data", str(server.data_dir))
        assert damaged.returncode == 1 and "DAMAGED" in damaged.stdout
