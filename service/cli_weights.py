"""Weight files of the `hebbian` command: a served model's state to and from `.npz`/`.keras`.

`.npz` is the portable array format (`service.model.weights_file`: numpy only, no pickle);
`.keras` is a Keras model of `Hebbian` layers that keeps learning where the server was.
TensorFlow is imported only for `.keras` files, in the command's own process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from service.cli_io import InputError

SUFFIXES = (".npz", ".keras")


def check_suffix(path: Path) -> str:
    """`path`'s suffix if it is a weights file's; InputError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: expected a .npz or .keras file")
    return suffix


def write_weights(state: Any, out: Path) -> None:
    """Write a `ModelState` (`HebbianClient.get_model_state`) as `.npz` or `.keras`."""
    suffix = check_suffix(out)
    if suffix == ".npz":
        from service.model.weights_file import save_weights

        save_weights(out, state.config, state.arrays)
        return
    stack_of(state.config, state.arrays).keras_model().save(out)


def stack_of(config: dict, arrays: dict[str, np.ndarray]) -> Any:
    """A `HebbianStack` of `config` holding the state `arrays` (no TensorFlow)."""
    from service.model import HebbianStack, StackConfig

    stack = HebbianStack(StackConfig.from_dict(config))
    stack.load_state_arrays(arrays)
    return stack


def read_weights(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config, flat state arrays) of a `.npz` weights file or a `.keras` file of
    `Hebbian` layers; InputError when it is neither."""
    suffix = check_suffix(path)
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    if suffix == ".npz":
        from service.model.weights_file import WeightsFileError, load_weights

        try:
            return load_weights(path)
        except WeightsFileError as error:
            raise InputError(str(error)) from None
    return _read_keras(path)


def _read_keras(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    import keras

    from service.model.keras_model import hebbian_layers
    from service.model.layer_state import FIELDS, state_key

    try:
        model = keras.saving.load_model(path)
    except (OSError, ValueError, TypeError) as error:
        raise InputError(f"{path}: cannot load this .keras file: {error}") from None
    layers = hebbian_layers(model)
    if not layers or len(layers) != len(model.layers):
        raise InputError(f"{path}: a served model is a stack of Hebbian layers only; this "
                         f"file has {[type(layer).__name__ for layer in model.layers]}")
    config = {
        "input_dim": int(layers[0].params.input_dim),
        "layers": [{**layer.params.to_dict(), "seed": layer.seed} for layer in layers],
    }
    arrays = {
        state_key(index, field): np.asarray(variable.numpy())
        for index, layer in enumerate(layers)
        for field, variable in zip(FIELDS, layer.state_variables, strict=True)
    }
    return config, arrays
