"""`.keras` files of this project load in a fresh process with plain `keras.saving.load_model`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from service.model import Hebbian, HebbianSequential, HebbianStack, StackConfig

ROOT = Path(__file__).resolve().parents[2]
X = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
LOAD = """
import json, sys
{imports}
model = keras.saving.load_model(sys.argv[1])
print(json.dumps({{"class": type(model).__name__,
                   "kernels": [layer.kernel.numpy().tolist() for layer in model.layers],
                   "steps": [int(layer.step.numpy()) for layer in model.layers],
                   "learn": [layer.learn for layer in model.layers]}}))
"""


def load_in_fresh_process(path: Path, imports: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", LOAD.format(imports=imports), str(path)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )


def test_a_saved_hebbian_sequential_loads_in_a_fresh_process_after_import_service_model(tmp_path):
    model = HebbianSequential([keras.Input((8,)), Hebbian(4, seed=0, learn="training"),
                               Hebbian(2, seed=1)])
    model.fit(X, verbose=0)
    model.save(tmp_path / "m.keras")
    done = load_in_fresh_process(tmp_path / "m.keras", "import keras; import service.model")
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded["class"] == "HebbianSequential"
    assert loaded["steps"] == [40, 40]
    assert loaded["learn"] == ["training", "always"]
    for kernel, layer in zip(loaded["kernels"], model.layers, strict=True):
        np.testing.assert_array_equal(np.float32(kernel), layer.kernel.numpy())


def test_an_exported_served_model_loads_in_a_fresh_process(tmp_path):
    stack = HebbianStack(StackConfig(8, ({"units": 3, "rule": "sanger", "seed": 2},)))
    stack.engine.process(X)
    stack.keras_model().save(tmp_path / "served.keras")
    # the other import order: the classes register once Keras is imported
    done = load_in_fresh_process(tmp_path / "served.keras", "import service.model; import keras")
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded["steps"] == [40]
    np.testing.assert_array_equal(np.float32(loaded["kernels"][0]), stack.layer_states()[0].kernel)


def test_without_the_import_the_error_names_the_package_to_import(tmp_path):
    model = keras.Sequential([keras.Input((8,)), Hebbian(2, seed=0)])
    model.save(tmp_path / "m.keras")
    done = load_in_fresh_process(tmp_path / "m.keras", "import keras")
    assert done.returncode != 0
    assert "'registered_name': 'service.model>Hebbian'" in done.stderr


def test_a_file_saved_before_the_refused_counter_and_the_learn_switch_still_loads(tmp_path):
    import io
    import zipfile

    import h5py

    model = keras.Sequential([keras.Input((8,)), Hebbian(2, seed=0)])
    model(X)
    model.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as new:
        config = new.read("config.json").decode()
        weights = io.BytesIO(new.read("model.weights.h5"))
        metadata = new.read("metadata.json")
    assert '"registered_name": "service.model>Hebbian"' in config
    config = config.replace("service.model>Hebbian", "hebbian>Hebbian")
    config = config.replace('"learn": "always"', '"learning": true')
    with h5py.File(weights, "a") as h5:
        del h5["layers/hebbian/vars/5"]  # the layout had 5 variables: no `refused`
    with zipfile.ZipFile(tmp_path / "old.keras", "w") as old:
        old.writestr("config.json", config)
        old.writestr("metadata.json", metadata)
        old.writestr("model.weights.h5", weights.getvalue())
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    layer = loaded.layers[0]
    np.testing.assert_array_equal(layer.kernel.numpy(), model.layers[0].kernel.numpy())
    assert int(layer.step.numpy()) == 40 and int(layer.refused.numpy()) == 0
    assert layer.learn == "always"
