"""A data directory written by release 0.1.0 (XLA engine) opens, answers and keeps learning.

The fixture (see its README) was cut off by SIGKILL with 100 samples per model in the log
only: recovery replays them through today's native engine, whose float32 rounding may
differ from XLA's in the last bits, so the answers match within float32 tolerance; after
that, restarts reproduce the state bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from service.client import HebbianClient
from tests.server_process import ServerProcess

FIXTURE = Path(__file__).parent / "fixtures" / "release-0.1.0"


def probe(client: HebbianClient, expected) -> dict[str, np.ndarray]:
    return {
        "default": client.process(expected["probe16"], learn=False),
        "stack": client.process(expected["probe8"], learn=False, model="stack"),
    }


def test_a_data_directory_of_release_0_1_0_opens_and_keeps_learning(tmp_path):
    shutil.copytree(FIXTURE / "models", tmp_path / "data" / "models")
    expected = np.load(FIXTURE / "expected.npz", allow_pickle=False)
    steps = json.loads((FIXTURE / "steps.json").read_text())

    with ServerProcess(tmp_path) as server:
        client = HebbianClient(server.target, timeout=60)
        assert {m.name: m.step for m in client.list_models()} == steps
        assert client.get_model("stack").config.engine == "native"
        answers = probe(client, expected)
        np.testing.assert_allclose(answers["default"], expected["y16"], atol=1e-4)
        np.testing.assert_allclose(answers["stack"], expected["y8"], atol=1e-4)
        more = np.random.default_rng(9).normal(size=(20, 8)).astype(np.float32) * 0.5
        client.process(more, model="stack")
        learned = probe(client, expected)
        assert client.get_model("stack").step == steps["stack"] + 20

    with ServerProcess(tmp_path) as server:
        again = probe(HebbianClient(server.target, timeout=60), expected)
    for name, value in learned.items():
        assert np.array_equal(again[name], value), name
