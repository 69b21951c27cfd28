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


def checked_states(
    params: Sequence[HebbianParams], states: Sequence[HebbianState]
) -> tuple[HebbianState, ...]:
    """`states` (one per layer) as numpy arrays, every field checked against its layer's
    shape and dtype; what both engines load.

    Raises:
      ValueError: a layer or field is missing or has the wrong shape or dtype (nothing is
        returned, so a caller that assigns only after this returns changes nothing).
    """
    states = tuple(states)
    if len(states) != len(params):
        raise ValueError(f"expected {len(params)} layer states; got {len(states)}")
    checked = []
    for index, (p, state) in enumerate(zip(params, states, strict=True)):
        fields = []
        for field, value, (shape, dtype) in zip(FIELDS, state, state_shapes(p), strict=True):
            value = np.asarray(value)
            if value.shape != shape or value.dtype != dtype:
                raise ValueError(
                    f"state {state_key(index, field)!r} is {value.dtype}{list(value.shape)}; "
                    f"expected {dtype}{list(shape)}"
                )
            fields.append(value)
        checked.append(HebbianState(*fields))
    return tuple(checked)


def stack_states(
    params: Sequence[HebbianParams], arrays: Mapping[str, np.ndarray]
) -> tuple[HebbianState, ...]:
    """The inverse of `stack_arrays`, checked as `checked_states` checks.

    Raises:
      ValueError: a field is missing or has the wrong shape or dtype.
    """
    for index in range(len(params)):
        for field in FIELDS:
            if state_key(index, field) not in arrays:
                raise ValueError(f"state has no {state_key(index, field)!r}")
    return checked_states(params, [
        HebbianState(*(arrays[state_key(index, field)] for field in FIELDS))
        for index in range(len(params))
    ])


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
