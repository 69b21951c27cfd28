"""A model as the service holds it: an input width, a stack of Hebbian layers, an engine.

No TensorFlow here unless the model asks for the XLA engine or a Keras model is made of
it (`keras_model`, for `.keras` export).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from service.model.engine import DEFAULT_ENGINE, Engine, check_engine
from service.model.layer_state import HebbianState, initial_state, stack_arrays, stack_states
from service.model.params import HebbianParams, layer_from_config
from service.model.updates import UPDATABLE, LayerChanges, updated_layers


@dataclass(frozen=True)
class StackConfig:
    """Architecture of a model: `input_dim`, one `Hebbian` kwargs dict per layer, the engine.

    Every layer carries a concrete seed (see `with_seeds`), so the same config always
    builds the same initial weights. `engine` is "native" (numba, CPUs; the default) or
    "xla" (TensorFlow/XLA, for accelerators and very wide models).
    """

    input_dim: int
    layers: tuple[Mapping, ...]
    engine: str = DEFAULT_ENGINE

    def __post_init__(self) -> None:
        if isinstance(self.input_dim, bool) or not isinstance(self.input_dim, int | np.integer):
            raise ValueError(f"input_dim must be an integer >= 1; got {self.input_dim!r}")
        if self.input_dim < 1:
            raise ValueError(f"input_dim must be an integer >= 1; got {self.input_dim!r}")
        if not self.layers:
            raise ValueError("a model needs at least one layer; got none")
        object.__setattr__(self, "input_dim", int(self.input_dim))
        object.__setattr__(self, "layers", tuple(dict(layer) for layer in self.layers))
        object.__setattr__(self, "engine", check_engine(self.engine or DEFAULT_ENGINE))
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
        return StackConfig(self.input_dim, tuple(layers), self.engine)

    def layer_params(self) -> tuple[tuple[HebbianParams, int | None], ...]:
        """Each layer's built params (input width chained from `input_dim`) and seed.

        Raises:
          ValueError: naming the layer and the bad setting.
        """
        built, width = [], self.input_dim
        for index, spec in enumerate(self.layers):
            try:
                params, seed = layer_from_config(spec)
            except (TypeError, ValueError) as err:
                raise ValueError(f"layer {index}: {err}") from None
            built.append((params.with_input_dim(width), seed))
            width = params.units
        return tuple(built)

    @property
    def output_dim(self) -> int:
        """Width of the last layer."""
        return int(self.layers[-1].get("units") or self.layers[-1]["output_dim"])

    def to_dict(self) -> dict:
        """JSON/YAML-friendly form."""
        return {
            "input_dim": int(self.input_dim),
            "engine": self.engine,
            "layers": [dict(layer) for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> StackConfig:
        """Inverse of `to_dict`; raises ValueError naming a missing or unknown key.

        A config without `engine` (written before there was a choice) uses the default.
        """
        unknown = set(data) - {"input_dim", "layers", "engine"}
        if unknown:
            raise ValueError(
                f"unknown model config keys {sorted(unknown)}; expected input_dim, layers, "
                "engine"
            )
        if "input_dim" not in data or "layers" not in data:
            raise ValueError("a model config needs input_dim and layers")
        layers = data["layers"]
        if not isinstance(layers, Sequence) or isinstance(layers, str | bytes):
            raise ValueError(f"layers must be a list of layer configs; got {layers!r}")
        return cls(data["input_dim"], tuple(layers), data.get("engine") or DEFAULT_ENGINE)


class HebbianStack:
    """A built model: its config (seeds in force), layer params and serving engine.

    The engine holds the live state; `state_arrays`/`load_state_arrays` read and replace
    it in the one flat layout ``"layer{i}.{field}"``, and `keras_model` makes a Keras
    `Sequential` of `Hebbian` layers with that state (for `.keras` export).

    Args:
      config: the architecture; layers without a seed get one drawn.
      buckets: padded batch sizes of the XLA engine (ignored by the native one).
    """

    def __init__(self, config: StackConfig, buckets: Sequence[int] | None = None):
        self.config = config.with_seeds()
        built = self.config.layer_params()
        self.params = tuple(params for params, _ in built)
        self.seeds = [int(seed) for _, seed in built]
        states = [initial_state(p, seed) for p, seed in zip(self.params, self.seeds, strict=True)]
        self._buckets = buckets
        self.engine: Engine = _build_engine(self.config, self.params, states, buckets)

    def reset(self, seed: int | None = None) -> None:
        """Re-initialise every layer; a new `seed` gives layer i the seed `seed + i`."""
        if seed is not None:
            self.set_seeds([int(seed) + index for index in range(len(self.params))])
        self.engine.load_layer_states([
            initial_state(p, s) for p, s in zip(self.params, self.seeds, strict=True)
        ])

    def set_seeds(self, seeds: Sequence[int]) -> None:
        """Make `seeds` (one per layer) the seeds in force, without re-initialising anything:
        a loaded snapshot's state was drawn from them, and a later `reset()` without a seed
        starts from them."""
        seeds = [int(seed) for seed in seeds]
        if len(seeds) != len(self.params):
            raise ValueError(f"expected {len(self.params)} seeds; got {len(seeds)}")
        self.seeds = seeds
        layers = [{**spec, "seed": seed}
                  for spec, seed in zip(self.config.layers, seeds, strict=True)]
        self.config = StackConfig(self.config.input_dim, tuple(layers), self.config.engine)

    def hyper_parameters(self) -> LayerChanges:
        """The settings an update may change, per layer, as they are in force."""
        return tuple({key: float(getattr(p, key)) for key in UPDATABLE} for p in self.params)

    def check_update(self, changes: LayerChanges) -> StackConfig:
        """The config `update(changes)` would put in force; nothing changes.

        Raises:
          ValueError: a setting that may not change, or a bad value (named).
        """
        config = StackConfig(self.config.input_dim,
                             updated_layers(self.config.layers, changes), self.config.engine)
        config.layer_params()
        return config

    def update(self, changes: LayerChanges) -> None:
        """Change learning-rate and schedule settings (`service.model.updates`), keeping
        every layer's state: a new engine with the new params is loaded with the current
        states. Checked (`check_update`) before anything changes."""
        config = self.check_update(changes)
        params = tuple(p for p, _ in config.layer_params())
        states = self.engine.layer_states()
        self.engine = _build_engine(config, params, states, self._buckets)
        self.config, self.params = config, params

    def resolved_config(self) -> StackConfig:
        """The config with every layer setting spelled out, seeds included."""
        layers = [{**p.to_dict(), "seed": seed}
                  for p, seed in zip(self.params, self.seeds, strict=True)]
        return StackConfig(self.config.input_dim, tuple(layers), self.config.engine)

    def layer_states(self) -> tuple[HebbianState, ...]:
        """A copy of every layer's state as numpy arrays."""
        return self.engine.layer_states()

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every layer's full state as numpy arrays, keyed "layer{i}.{field}"."""
        return stack_arrays(self.engine.layer_states())

    def load_state_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Assign a full state produced by `state_arrays` (checked before anything changes)."""
        self.engine.load_layer_states(stack_states(self.params, arrays))

    def keras_model(self):
        """A Keras `Sequential` of `Hebbian` layers holding the current state (imports Keras).

        For the XLA engine it is the live model the engine serves; otherwise a copy.
        """
        live = getattr(self.engine, "model", None)
        if live is not None:
            return live
        model, layers = _keras_stack(self.resolved_config())
        for layer, state in zip(layers, self.engine.layer_states(), strict=True):
            for variable, value in zip(layer.state_variables, state, strict=True):
                variable.assign(value)
        return model


def _build_engine(config: StackConfig, params, states, buckets) -> Engine:
    if config.engine == "xla":
        from service.model.xla_engine import DEFAULT_BUCKETS, XlaEngine

        model, layers = _keras_stack(config)
        engine = XlaEngine(layers, buckets or DEFAULT_BUCKETS)
        engine.model = model
        engine.load_layer_states(states)
        return engine
    from service.model.native_engine import NativeEngine

    return NativeEngine(params, states)


def _keras_stack(config: StackConfig):
    """A built `HebbianSequential` of `Hebbian` layers for `config` (seeded initial state):
    in Keras too the stack is guarded as one, as the engines guard it."""
    import keras

    from service.model.keras_model import HebbianSequential
    from service.model.layer import Hebbian

    layers = [Hebbian(name=f"hebbian_{index}", **spec) for index, spec in enumerate(config.layers)]
    return HebbianSequential([keras.Input((config.input_dim,)), *layers]), layers
