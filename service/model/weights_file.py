"""The portable array file of a model's weights: `.npz` without pickle.

One file holds everything `CreateModel` needs to make the same model (and what any numpy
reader needs to use the weights without this package):

- ``"format"``: the string ``"hebbian-weights/1"`` (a 0-d unicode array);
- ``"config"``: the model's config (`StackConfig.to_dict()`, seeds included) as a JSON
  string (a 0-d unicode array);
- ``"layer{i}.{field}"`` for each layer ``i`` (input layer first) and each field of
  `HebbianState` (`layer_state.state_key`): ``kernel`` float32 (inputs, units),
  ``lateral`` float32 (units, units), ``mask`` float32 (inputs, units) of 0/1, ``theta``
  float32 (units,), ``step`` int64 scalar.

Every array is a plain numeric or unicode dtype, so ``np.load(path, allow_pickle=False)``
reads it; nothing in it is ever unpickled. Read back in Python::

    with np.load("model.npz", allow_pickle=False) as npz:
        config = json.loads(str(npz["config"]))
        kernel = npz["layer0.kernel"]
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from service.model.layer_state import FIELDS, state_key

FORMAT = "hebbian-weights/1"
MAX_CONFIG_CHARS = 1 << 20


class WeightsFileError(ValueError):
    """A file that is not a weights file of this format (the message says why)."""


def save_weights(path: str | Path, config: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
    """Write `config` (a `StackConfig.to_dict()` dict) and the flat state `arrays`
    ({"layer{i}.{field}": array}) to `path` (a `.npz` file)."""
    layers = len(config["layers"])
    payload: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "config": np.array(json.dumps(dict(config), sort_keys=True)),
    }
    for index in range(layers):
        for field in FIELDS:
            key = state_key(index, field)
            payload[key] = np.asarray(arrays[key], np.int64 if field == "step" else np.float32)
    with open(path, "wb") as handle:
        np.savez(handle, **payload)


def load_weights(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config dict, flat state arrays) of a weights file, read with ``allow_pickle=False``.

    Only the file's structure is checked here; the values are checked against the config
    where they are used (`CreateModel` validates them like any input).

    Raises:
      WeightsFileError: not an `.npz` of this format, or a missing or extra array.
      OSError: the file cannot be read.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, zipfile.BadZipFile, EOFError) as err:
        raise WeightsFileError(f"{path}: not a .npz weights file ({err})") from None
    if not isinstance(arrays, dict):  # np.load of a .npy file gives one array
        raise WeightsFileError(f"{path}: a single array, not a .npz weights file")
    found = str(arrays.pop("format", ""))
    if found != FORMAT:
        raise WeightsFileError(f"{path}: format {found!r}; expected {FORMAT!r}")
    text = arrays.pop("config", np.array(""))
    if text.dtype.kind != "U" or text.ndim != 0 or len(str(text)) > MAX_CONFIG_CHARS:
        raise WeightsFileError(f"{path}: 'config' must be one JSON string")
    try:
        config = json.loads(str(text))
    except json.JSONDecodeError as err:
        raise WeightsFileError(f"{path}: 'config' is not JSON: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise WeightsFileError(f"{path}: 'config' must be a model config with layers")
    expected = {state_key(i, f) for i in range(len(config["layers"])) for f in FIELDS}
    missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
    if missing or extra:
        raise WeightsFileError(
            f"{path}: arrays do not match the config's {len(config['layers'])} layer(s)"
            + (f"; missing {missing[:4]}" if missing else "")
            + (f"; unexpected {extra[:4]}" if extra else "")
        )
    return config, arrays
