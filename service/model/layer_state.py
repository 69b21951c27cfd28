"""The state of one Hebbian layer, its seeded initial value and its one array layout.

No TensorFlow here: the native engine, the durable state and the server read and write
states as numpy arrays; the Keras layer holds the same fields as variables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from service.model.params import HebbianParams


class HebbianState(NamedTuple):
    """Full learning state of one layer (every field is saved and restored)."""

    kernel: object  # (input_dim, units) float32 feed-forward weights, zero where mask is 0
    lateral: object  # (units, units) float32 lateral weights, diagonal exactly 0
    mask: object  # (input_dim, units) float32 fixed 0/1 connectivity
    theta: object  # (units,) float32 BCM sliding threshold (kept, unused, by other rules)
    step: object  # int64 scalar: samples learned so far (schedule position)


FIELDS = HebbianState._fields


def state_key(index: int, field: str) -> str:
    """The name of one layer's field in a model's flat array map (snapshots, exports)."""
    return f"layer{index}.{field}"


def state_shapes(params: HebbianParams) -> HebbianState:
    """(shape, dtype) of every field of a built layer."""
    d, u = params.input_dim, params.units
    f32 = np.dtype(np.float32)
    return HebbianState(((d, u), f32), ((u, u), f32), ((d, u), f32), ((u,), f32),
                        ((), np.dtype(np.int64)))


def stack_arrays(states: Sequence[HebbianState]) -> dict[str, np.ndarray]:
    """A stack's layer states as one flat map {"layer{i}.{field}": array}."""
    return {
        state_key(index, field): np.asarray(value)
        for index, state in enumerate(states)
        for field, value in zip(FIELDS, state, strict=True)
    }


def stack_states(
    params: Sequence[HebbianParams], arrays: Mapping[str, np.ndarray]
) -> tuple[HebbianState, ...]:
    """The inverse of `stack_arrays`, checked field by field against each layer's shape.

    Raises:
      ValueError: a field is missing or has the wrong shape or dtype (nothing is returned,
        so a caller that assigns only after this returns changes nothing on error).
    """
    states = []
    for index, p in enumerate(params):
        fields = []
        for field, (shape, dtype) in zip(FIELDS, state_shapes(p), strict=True):
            key = state_key(index, field)
            if key not in arrays:
                raise ValueError(f"state has no {key!r}")
            value = np.asarray(arrays[key])
            if value.shape != shape or value.dtype != dtype:
                raise ValueError(
                    f"state {key!r} is {value.dtype}{list(value.shape)}; "
                    f"expected {dtype}{list(shape)}"
                )
            fields.append(value)
        states.append(HebbianState(*fields))
    return tuple(states)


def normalize_columns(kernel: np.ndarray, target: float) -> np.ndarray:
    """Each unit's weight vector (a kernel column) rescaled to norm `target`, in float32.

    An all-zero column (a unit with no connections) stays zero.
    """
    kernel = np.asarray(kernel, np.float32)
    norms = np.sqrt(np.sum(kernel * kernel, axis=0, keepdims=True))
    scale = np.divide(np.float32(target), norms, out=np.zeros_like(norms), where=norms != 0)
    return (kernel * scale).astype(np.float32)


def initial_state(params: HebbianParams, seed: int) -> HebbianState:
    """The seeded initial state of a built layer, as numpy arrays.

    The mask and the kernel come from one numpy generator, so they depend on the
    seed alone (not on TensorFlow's random state or op order).
    """
    if params.input_dim is None:
        raise ValueError("initial_state needs params with input_dim set")
    shape = (params.input_dim, params.units)
    rng = np.random.default_rng(seed)
    if params.connectivity == "all":
        mask = np.ones(shape, np.float32)
    elif params.connectivity == "random":
        mask = (rng.random(shape) < params.connectivity_prob).astype(np.float32)
    else:
        mask = np.zeros(shape, np.float32)
    kernel = rng.normal(0.0, 1.0 / np.sqrt(params.input_dim), shape)
    if params.rule == "bcm":
        # BCM synapses start excitatory: a unit whose responses start negative is pulled
        # into the non-selective zero-response fixed point and never leaves it.
        kernel = np.abs(kernel)
    kernel = (kernel * mask).astype(np.float32)
    if params.rule == "hebb" and params.stabilizer == "normalize":
        kernel = normalize_columns(kernel, params.norm_target)
    elif params.rule == "hebb":
        kernel = np.clip(kernel, -params.weight_bound, params.weight_bound).astype(np.float32)
    off_diagonal = 1.0 - np.eye(params.units, dtype=np.float32)
    if params.lateral == "inhibition":
        lateral = -params.lateral_strength * off_diagonal
    else:
        lateral = np.zeros((params.units, params.units), np.float32)
    theta = np.zeros((params.units,), np.float32)
    return HebbianState(kernel, lateral.astype(np.float32), mask, theta, np.array(0, np.int64))
