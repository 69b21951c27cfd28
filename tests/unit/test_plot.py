"""`service.plot`: real PNGs of real models, of the right size and not blank."""

import subprocess
import sys

import keras
import numpy as np
import pytest
from matplotlib.image import imread

from service.cli import main
from service.model import Hebbian, HebbianSequential, HebbianStack, StackConfig
from service.plot import plot_model

X = np.random.default_rng(0).normal(size=(200, 64)).astype(np.float32)
CONFIG = StackConfig(64, ({"units": 6, "rule": "sanger", "learning_rate": 0.005, "seed": 0},
                          {"units": 3, "rule": "oja_subspace", "lateral": "anti_hebbian",
                           "seed": 1}))


def assert_picture(path, min_height: int, width: int | None = None) -> None:
    pixels = imread(path)[..., :3]
    assert pixels.shape[0] >= min_height
    if width is not None:
        assert pixels.shape[1] == width
    assert pixels.std() > 0.05  # not blank: a white page has 0


@pytest.fixture
def stack():
    stack = HebbianStack(CONFIG)
    stack.engine.process(X)
    return stack


def test_a_stack_renders_as_images_when_the_input_is_a_square(stack, tmp_path):
    figure = plot_model(stack, stats={"explained variance": [0.4, 0.9]},
                        curves={"explained variance": [0.1, 0.3, 0.4]}, title="stack")
    titles = [ax.get_title() for ax in figure.axes]
    assert "layer 0: receptive fields, 6 unit(s)" in titles  # 64 inputs -> 8x8 inferred
    assert "layer 1: receptive fields (linear composite), 3 unit(s)" in titles
    assert "learning curves" in titles and "layer statistics (as the server reports them)" in titles
    figure.savefig(tmp_path / "stack.png", dpi=50)
    assert_picture(tmp_path / "stack.png", min_height=4 * 3.6 * 50 - 2, width=13 * 50)


def test_kernels_are_matrices_without_an_image_shape_and_a_wrong_shape_is_named(stack):
    titles = [ax.get_title() for ax in plot_model(stack, ()).axes]
    assert "layer 0: kernel (inputs x units)" in titles
    with pytest.raises(ValueError, match="image_shape 4x4 has 16 pixels; the input width is 64"):
        plot_model(stack, (4, 4))


def test_a_keras_model_and_a_keras_file_render_the_same_state(tmp_path):
    model = HebbianSequential([keras.Input((64,)), Hebbian(4, seed=2)])
    model.predict(X, verbose=0)
    model.save(tmp_path / "m.keras")
    for source in (model, tmp_path / "m.keras"):
        figure = plot_model(source)
        assert "layer 0: weight norms (step 200)" in [a.get_title() for a in figure.axes]
    figure.savefig(tmp_path / "m.png", dpi=50)
    assert_picture(tmp_path / "m.png", min_height=3.6 * 50 - 2)


def test_hebbian_plot_from_a_keras_file_writes_a_png(tmp_path, capsys):
    model = keras.Sequential([keras.Input((16,)), Hebbian(4, rule="sanger", seed=3)])
    model.save(tmp_path / "m.keras")
    code = main(["plot", "--from", str(tmp_path / "m.keras"), "--out", str(tmp_path / "m.png"),
                 "--image-shape", "4x4"])
    assert code == 0
    assert f"written to {tmp_path / 'm.png'}" in capsys.readouterr().out
    assert_picture(tmp_path / "m.png", min_height=200)
    assert main(["plot", "--from", str(tmp_path / "none.keras"), "--out", "x.png"]) == 1
    assert "none.keras: no such file" in capsys.readouterr().err


def test_importing_service_plot_does_not_import_matplotlib():
    code = "import sys, service.plot; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
