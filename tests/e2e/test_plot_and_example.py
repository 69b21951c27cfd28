"""`hebbian plot` of a served model, and the digits example run against a real server."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from matplotlib.image import imread

from service.client import HebbianClient
from tests.server_process import hebbian_command

ROOT = Path(__file__).resolve().parents[2]


def not_blank(path: Path) -> np.ndarray:
    pixels = imread(path)[..., :3]
    assert pixels.std() > 0.05
    return pixels


def test_hebbian_plot_draws_a_served_model_with_its_layer_statistics(hebbian_server, tmp_path):
    with HebbianClient(hebbian_server.target) as client:
        client.create_model("plotted", {"input_dim": 64, "layers": [
            {"units": 4, "rule": "sanger", "learning_rate": 0.005, "seed": 0}]})
        client.process(np.random.default_rng(0).normal(size=(300, 64)), model="plotted")
    out = tmp_path / "served.png"
    done = subprocess.run(
        [*hebbian_command(), "--target", hebbian_server.target, "plot", "-m", "plotted",
         "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"step": 300' in done.stdout
    pixels = not_blank(out)
    assert pixels.shape[0] == 2 * 3.6 * 80  # one layer row + the statistics row, at 80 dpi


def test_the_digits_example_learns_components_close_to_pcas(hebbian_server, tmp_path):
    out = tmp_path / "digits.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits_pca.py"), "--target",
         hebbian_server.target, "--out", str(out), "--components", "3", "--passes", "2",
         "--samples", "900"],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    cosines = [float(c) for c in done.stdout.split("|cos| with PCA's components: ")[1]
               .splitlines()[0].split()]
    assert len(cosines) == 3 and cosines[0] > 0.9, done.stdout
    not_blank(out)


def test_the_digits_example_starts_a_server_of_its_own_without_a_target(tmp_path):
    out = tmp_path / "own.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits_pca.py"), "--out", str(out),
         "--components", "2", "--passes", "1", "--samples", "300"],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "model digits: step 300" in done.stdout
    not_blank(out)
