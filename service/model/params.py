"""Hyper-parameters of one Hebbian layer, validated once and shared by layer and engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

RULES = ("hebb", "oja", "oja_subspace", "sanger", "bcm")
LATERAL_MODES = ("none", "inhibition", "anti_hebbian")
CONNECTIVITY = ("all", "random", "zero")
ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid")
STABILIZERS = ("normalize", "clip")
GRANULARITIES = ("per_sample", "batch_mean")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not ok or value != value or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
    return value


@dataclass(frozen=True)
class HebbianParams:
    """Static description of a Hebbian layer: everything but its state.

    Frozen and hashable, so compiled functions can close over it. `input_dim` is
    None until the layer is built.
    """

    units: int
    rule: str = "oja"
    learning_rate: float = 1e-3
    decay_steps: float = 0.0
    lateral: str = "none"
    lateral_strength: float = 0.1
    lateral_learning_rate: float = 1e-3
    connectivity: str = "all"
    connectivity_prob: float = 1.0
    activation: str = "linear"
    stabilizer: str = "normalize"
    norm_target: float = 1.0
    weight_bound: float = 1.0
    bcm_threshold_rate: float = 1e-2
    granularity: str = "per_sample"
    input_dim: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.units, bool) or not isinstance(self.units, int) or self.units < 1:
            raise ValueError(f"units must be an integer >= 1; got {self.units!r}")
        if self.input_dim is not None and (
            isinstance(self.input_dim, bool)
            or not isinstance(self.input_dim, int)
            or self.input_dim < 1
        ):
            raise ValueError(f"input_dim must be an integer >= 1; got {self.input_dim!r}")
        _choice("rule", self.rule, RULES)
        _choice("lateral", self.lateral, LATERAL_MODES)
        _choice("connectivity", self.connectivity, CONNECTIVITY)
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("stabilizer", self.stabilizer, STABILIZERS)
        _choice("granularity", self.granularity, GRANULARITIES)
        for name in ("learning_rate", "decay_steps", "lateral_strength", "lateral_learning_rate"):
            object.__setattr__(self, name, _positive(name, getattr(self, name), allow_zero=True))
        for name in ("norm_target", "weight_bound", "bcm_threshold_rate"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        prob = float(self.connectivity_prob)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"connectivity_prob must be in [0, 1]; got {self.connectivity_prob!r}")
        object.__setattr__(self, "connectivity_prob", prob)

    def with_input_dim(self, input_dim: int) -> HebbianParams:
        """The same parameters for a layer built on `input_dim` inputs."""
        return HebbianParams(**{**asdict(self), "input_dim": int(input_dim)})

    def to_dict(self) -> dict:
        """Plain-dict form (the layer's config, minus Keras' own keys)."""
        out = asdict(self)
        out.pop("input_dim")
        return out


# Keys of a layer's config that are not `HebbianParams` fields: the seed, the Keras
# layer's `learning` switch and `output_dim` (the seed question's name for `units`).
_LAYER_EXTRAS = ("seed", "learning", "output_dim")
LAYER_KEYS = tuple(name for name in HebbianParams.__dataclass_fields__ if name != "input_dim")


def layer_from_config(spec: Mapping) -> tuple[HebbianParams, int | None]:
    """The params and seed of one layer config (the `Hebbian` layer's arguments).

    Raises:
      ValueError: an unknown key or a bad value, named.
    """
    unknown = set(spec) - set(LAYER_KEYS) - set(_LAYER_EXTRAS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    kwargs = {key: spec[key] for key in LAYER_KEYS if key in spec}
    if spec.get("output_dim") is not None:
        if kwargs.get("units") is not None and kwargs["units"] != spec["output_dim"]:
            raise ValueError(
                f"units and output_dim are the same setting; got units={kwargs['units']!r}, "
                f"output_dim={spec['output_dim']!r}"
            )
        kwargs["units"] = spec["output_dim"]
    if kwargs.get("units") is None:
        raise ValueError("units is required: the number of output neurons, an integer >= 1")
    if kwargs.get("lateral") is None:
        kwargs.pop("lateral", None)
    return HebbianParams(**kwargs), check_seed(spec.get("seed"))


def check_seed(seed) -> int | None:
    """`seed` as an int (None stays None); raises ValueError for anything else."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None; got {seed!r}")
    return int(seed)
