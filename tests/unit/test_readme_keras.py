"""The README's Keras and plot examples run as written (in order, in one namespace)."""

import re
import warnings
from pathlib import Path

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def python_blocks(start: str, stop: str) -> list[str]:
    section = README[README.index(start): README.index(stop)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_keras_and_plot_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks("## The Keras layer", "### What this answers")
    blocks += python_blocks("## Pictures of what a model learned", "## The `hebbian` command")
    assert len(blocks) == 3
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the examples' rates suit their data
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    model = namespace["model"]
    assert int(model.layers[0].step.numpy()) == 3000  # fit: 3 epochs; predict did not learn
    assert (tmp_path / "pca.keras").is_file()
