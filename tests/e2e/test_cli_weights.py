"""`hebbian export` to .npz and .keras (no snapshot on the server), `hebbian models create
--from` either file, and `hebbian models update`, against a real `hebbian serve`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.client import HebbianClient
from tests.e2e.test_cli import hebbian


@pytest.fixture
def source(hebbian_server, request):
    """A model named after the test, trained on 60 samples; deleted afterwards."""
    name = request.node.name.lower().replace("_", "-")[:40].strip("-")
    with HebbianClient(hebbian_server.target) as client:
        client.create_model(name, {"input_dim": 8, "layers": [
            {"units": 3, "rule": "sanger", "learning_rate": 0.01, "seed": 2}]})
        client.process(np.random.default_rng(1).normal(size=(60, 8)), model=name)
        yield client, name
        for model in client.list_models():
            if model.name.startswith(name):
                client.delete_model(model.name)


def test_export_npz_writes_the_portable_format_and_no_snapshot(hebbian_server, source,
                                                               tmp_path):
    client, name = source
    out = tmp_path / "m.npz"

    result = hebbian("export", "-m", name, "--out", str(out), "--json",
                     target=hebbian_server.target)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"model": name, "step": 60, "path": str(out)}
    with np.load(out, allow_pickle=False) as npz:
        config = json.loads(str(npz["config"]))
        assert config["input_dim"] == 8 and config["layers"][0]["rule"] == "sanger"
        assert npz["layer0.kernel"].shape == (8, 3) and int(npz["layer0.step"]) == 60
        kernel = npz["layer0.kernel"]
    np.testing.assert_array_equal(kernel, client.get_model_state(name).arrays["layer0.kernel"])
    assert client.list_snapshots(name) == []


@pytest.mark.parametrize("suffix", [".npz", ".keras"])
def test_models_create_from_an_exported_file_continues_where_the_model_was(
        hebbian_server, source, tmp_path, suffix):
    client, name = source
    out = tmp_path / f"m{suffix}"
    assert hebbian("export", "-m", name, "--out", str(out),
                   target=hebbian_server.target).returncode == 0
    copy = f"{name}-copy"

    created = hebbian("models", "create", copy, "--from", str(out),
                      target=hebbian_server.target)

    assert created.returncode == 0, created.stderr
    assert int(json.loads(created.stdout)["step"]) == 60
    x = np.random.default_rng(5).normal(size=(5, 8))
    np.testing.assert_array_equal(client.process(x, model=copy), client.process(x, model=name))


def test_models_update_changes_a_rate_and_keeps_the_step(hebbian_server, source):
    client, name = source

    result = hebbian("models", "update", name, "--learning-rate", "0.002", "--decay-steps",
                     "1000", target=hebbian_server.target)

    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert int(model["step"]) == 60
    assert model["config"]["layers"][0]["learning_rate"] == pytest.approx(0.002)
    assert model["config"]["layers"][0]["decay_steps"] == 1000
    assert client.get_model(name).config.layers[0].learning_rate == pytest.approx(0.002)


def test_bad_files_and_flags_are_one_line_and_exit_2(hebbian_server, source, tmp_path):
    _, name = source
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    for args in (["models", "create", "x1", "--from", str(tmp_path / "bad.npz")],
                 ["models", "create", "x1", "--from", str(tmp_path / "m.txt")],
                 ["export", "-m", name, "--out", str(tmp_path / "m.txt")],
                 ["models", "update", name]):
        result = hebbian(*args, target=hebbian_server.target)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
