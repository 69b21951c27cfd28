"""A model as the service holds it: an input width and a stack of Hebbian layers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np

from service.model.engine import DEFAULT_BUCKETS, Engine
from service.model.layer import Hebbian
from service.model.rules import HebbianState


@dataclass(frozen=True)
class StackConfig:
    """Architecture of a model: `input_dim` and one `Hebbian` kwargs dict per layer.

    Every layer carries a concrete seed (see `with_seeds`), so the same config always
    builds the same initial weights.
    """

    input_dim: int
    layers: tuple[Mapping, ...]

    def __post_init__(self) -> None:
        if isinstance(self.input_dim, bool) or not isinstance(self.input_dim, int | np.integer):
            raise ValueError(f"input_dim must be an integer >= 1; got {self.input_dim!r}")
        if self.input_dim < 1:
            raise ValueError(f"input_dim must be an integer >= 1; got {self.input_dim!r}")
        if not self.layers:
            raise ValueError("a model needs at least one layer; got none")
        object.__setattr__(self, "layers", tuple(dict(layer) for layer in self.layers))
        granularities = {layer.get("granularity", "per_sample") for layer in self.layers}
        if len(granularities) > 1:
            raise ValueError(
                f"all layers of a model need one granularity; got {sorted(granularities)}"
            )

    def with_seeds(self, rng: np.random.Generator | None = None) -> StackConfig:
        """The same config with a seed drawn for every layer that has none."""
        rng = rng or np.random.default_rng()
        layers = [
            {**layer, "seed": int(rng.integers(2**31 - 1))} if layer.get("seed") is None
            else dict(layer)
            for layer in self.layers
        ]
        return StackConfig(self.input_dim, tuple(layers))

    @property
    def output_dim(self) -> int:
        """Width of the last layer."""
        return int(self.layers[-1]["units"])

    def to_dict(self) -> dict:
        """JSON/YAML-friendly form."""
        return {"input_dim": int(self.input_dim), "layers": [dict(layer) for layer in self.layers]}

    @classmethod
    def from_dict(cls, data: Mapping) -> StackConfig:
        """Inverse of `to_dict`; raises ValueError naming a missing or unknown key."""
        unknown = set(data) - {"input_dim", "layers"}
        if unknown:
            raise ValueError(
                f"unknown model config keys {sorted(unknown)}; expected input_dim, layers"
            )
        if "input_dim" not in data or "layers" not in data:
            raise ValueError("a model config needs input_dim and layers")
        layers = data["layers"]
        if not isinstance(layers, Sequence) or isinstance(layers, str | bytes):
            raise ValueError(f"layers must be a list of layer configs; got {layers!r}")
        return cls(data["input_dim"], tuple(layers))


class HebbianStack:
    """A built model: the Keras `Sequential` of `Hebbian` layers and its compiled engine.

    The Keras model and the engine share the same variables, so `model` can be saved
    as `.keras` or used directly while the engine serves it.
    """

    def __init__(self, config: StackConfig, buckets: Sequence[int] = DEFAULT_BUCKETS):
        self.config = config.with_seeds()
        known = set(Hebbian.__init__.__code__.co_varnames)
        self.layers = []
        for index, kwargs in enumerate(self.config.layers):
            unknown = set(kwargs) - known
            if unknown:
                raise ValueError(f"layer {index}: unknown settings {sorted(unknown)}")
            self.layers.append(Hebbian(name=f"hebbian_{index}", **kwargs))
        self.model = keras.Sequential([keras.Input((int(self.config.input_dim),)), *self.layers])
        self.engine = Engine(self.layers, buckets)

    def reset(self, seed: int | None = None) -> None:
        """Re-initialise every layer; a new `seed` gives layer i the seed `seed + i`."""
        layers = []
        for index, (layer, kwargs) in enumerate(zip(self.layers, self.config.layers, strict=True)):
            layer_seed = None if seed is None else int(seed) + index
            layer.reset_state(layer_seed)
            layers.append({**kwargs, "seed": layer.seed})
        self.config = StackConfig(self.config.input_dim, tuple(layers))

    def set_seeds(self, seeds: Sequence[int]) -> None:
        """Make `seeds` (one per layer) the seeds in force, without re-initialising
        anything: a loaded snapshot's state was drawn from them, and a later `reset()`
        without a seed starts from them."""
        if len(seeds) != len(self.layers):
            raise ValueError(f"{len(seeds)} seeds for a stack of {len(self.layers)} layers")
        layers = []
        for layer, kwargs, seed in zip(self.layers, self.config.layers, seeds, strict=True):
            layer.seed = int(seed)
            layers.append({**kwargs, "seed": layer.seed})
        self.config = StackConfig(self.config.input_dim, tuple(layers))

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every layer's full state as numpy arrays, keyed "layer{i}.{field}"."""
        return {
            f"layer{index}.{field}": variable.numpy()
            for index, layer in enumerate(self.layers)
            for field, variable in zip(HebbianState._fields, layer.state_variables, strict=True)
        }

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Assign a full state produced by `state_arrays` (checked before anything changes)."""
        updates = []
        for index, layer in enumerate(self.layers):
            for field, variable in zip(HebbianState._fields, layer.state_variables, strict=True):
                key = f"layer{index}.{field}"
                if key not in arrays:
                    raise ValueError(f"state has no {key!r}")
                value = np.asarray(arrays[key])
                if value.shape != tuple(variable.shape) or value.dtype != variable.dtype:
                    raise ValueError(
                        f"state {key!r} is {value.dtype}{list(value.shape)}; "
                        f"expected {variable.dtype}{list(variable.shape)}"
                    )
                updates.append((variable, value))
        for variable, value in updates:
            variable.assign(value)
