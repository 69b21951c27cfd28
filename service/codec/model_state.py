"""A model's full state <-> one `hebbian.v1.LayerState` per layer.

Both sides hold a state in the one flat layout of `service.model.layer_state`
({"layer{i}.{field}": array}, as snapshots and `.npz` weights files do); on the wire it is
one `LayerState` per layer. `layer_states_to_proto` writes it (the client sends raw bytes,
the server answers `values`, which grpcurl shows), `model_state` reads a
`GetModelStateResponse` on the client, `model_state_to_proto` writes one on the server.

A state sent by a caller (`CreateModel` with `layers`) is input like any other, decoded
by `decode_states`: each layer's arrays are checked against the layer the
config builds before anything is created, and a refusal is INVALID_ARGUMENT naming the
layer, the field and what was expected:

- one `LayerState` per layer of the config, each field present with exactly the layer's
  shape (the `shape` may be omitted when the value count matches), `values` or `raw`;
- every value finite; the mask 0 or 1 (all 1 for connectivity "all", all 0 for "zero")
  and the kernel exactly 0 where the mask is 0; the lateral diagonal exactly 0 (the
  whole lateral matrix 0 for lateral "none"); the BCM threshold >= 0; steps >= 0.

The element count of each tensor is checked before it is decoded, so a tensor cannot
make the server allocate more than the config's own (bounded) size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.api import hebbian_pb2 as pb
from service.codec.configs import config_from_proto, config_to_proto
from service.codec.tensors import decode_tensor, encode_tensor
from service.errors import InvalidInputError
from service.model.layer_state import FIELDS, HebbianState, stack_arrays, state_key, state_shapes

if TYPE_CHECKING:  # the client imports this module without the server or the engines
    from service.model.params import HebbianParams
    from service.server.core import session

_ARRAYS = tuple(field for field in FIELDS if field != "step")


@dataclass(frozen=True)
class ModelState:
    """A served model's full state as the client reads it (GetModelState): its config (the
    `StackConfig.to_dict()` form, every setting and seed spelled out), its step, and every
    layer's arrays in the flat layout (kernel, lateral, mask, theta float32; step int64)."""

    name: str
    config: dict
    step: int
    arrays: dict[str, np.ndarray]


def model_state(response: pb.GetModelStateResponse) -> ModelState:
    """A `GetModelStateResponse` as a `ModelState`."""
    arrays: dict[str, np.ndarray] = {}
    for index, layer in enumerate(response.layers):
        for field in FIELDS:
            arrays[state_key(index, field)] = (
                np.array(layer.step, np.int64) if field == "step"
                else decode_tensor(getattr(layer, field)))
    return ModelState(response.name, config_from_proto(response.config), int(response.step),
                      arrays)


def model_state_to_proto(state: session.ModelState) -> pb.GetModelStateResponse:
    """The API form of a served model's full state (the server's `ModelState`)."""
    return pb.GetModelStateResponse(
        name=state.name, config=config_to_proto(state.config), step=state.step,
        layers=layer_states_to_proto(stack_arrays(state.layers), raw=False),
    )


def layer_states_to_proto(arrays: Mapping[str, Any], raw: bool = True) -> list[pb.LayerState]:
    """The flat state `arrays` as one `LayerState` per layer, tensors as `raw` bytes or as
    `values`.

    Raises:
      InvalidInputError: a layer lacks a field (named), or there is no layer 0.
    """
    layers, index = [], 0
    while state_key(index, "kernel") in arrays:
        message = pb.LayerState()
        for field in FIELDS:
            key = state_key(index, field)
            if key not in arrays:
                raise InvalidInputError(f"the state has no {key!r}", "bad_state")
            if field == "step":
                message.step = int(np.asarray(arrays[key]))
            else:
                getattr(message, field).CopyFrom(encode_tensor(arrays[key], raw=raw))
        layers.append(message)
        index += 1
    if not layers:
        raise InvalidInputError(f"the state has no {state_key(0, 'kernel')!r}", "bad_state")
    return layers


def decode_states(layers: Sequence[pb.LayerState], params: Sequence[HebbianParams]
                  ) -> tuple[HebbianState, ...]:
    """The validated states of `layers` for a model built with `params`.

    Raises:
      InvalidInputError: naming the layer and the field.
    """
    if len(layers) != len(params):
        raise InvalidInputError(f"layers holds {len(layers)} layer state(s); the config has "
                      f"{len(params)} layer(s)", "bad_state")
    return tuple(_layer(index, layer, p) for index, (layer, p)
                 in enumerate(zip(layers, params, strict=True)))


def _layer(index: int, layer: pb.LayerState, params: HebbianParams) -> HebbianState:
    shapes = state_shapes(params)
    arrays = {field: _array(index, field, getattr(layer, field), getattr(shapes, field)[0])
              for field in _ARRAYS}
    kernel, lateral, mask, theta = (arrays[field] for field in _ARRAYS)
    if layer.step < 0:
        raise InvalidInputError(
            f"{state_key(index, 'step')} is {layer.step}; steps are >= 0", "bad_state")
    if not np.isin(mask, (0.0, 1.0)).all():
        _refuse(index, "mask", "holds values other than 0 and 1")
    wanted = {"all": 1.0, "zero": 0.0}.get(params.connectivity)
    if wanted is not None and not (mask == wanted).all():
        _refuse(index, "mask", f"must be all {wanted:g} for connectivity "
                               f"{params.connectivity!r}")
    if (kernel[mask == 0] != 0).any():
        _refuse(index, "kernel", "has non-zero weights where the mask is 0 (masked weights "
                                 "are exactly 0)")
    if (np.diagonal(lateral) != 0).any():
        _refuse(index, "lateral", "has a non-zero diagonal (no unit is laterally connected "
                                  "to itself)")
    if params.lateral == "none" and (lateral != 0).any():
        _refuse(index, "lateral", "must be all 0 for lateral 'none'")
    if (theta < 0).any():
        _refuse(index, "theta", "has negative values (the BCM threshold is a mean of y^2)")
    return HebbianState(kernel, lateral, mask, theta, np.array(layer.step, np.int64))


def _array(index: int, field: str, tensor: pb.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """One float32 field of a layer state, its size checked before it is decoded."""
    key = state_key(index, field)
    expected = int(np.prod(shape))
    if tensor.raw and tensor.values:
        raise InvalidInputError(f"{key}: set either values or raw, not both", "bad_state")
    count = len(tensor.raw) // 4 if tensor.raw else len(tensor.values)
    if (tensor.shape and tuple(tensor.shape) != shape) or count != expected or (
            len(tensor.raw) % 4):
        given = list(tensor.shape) or f"{count} values"
        raise InvalidInputError(f"{key} is {given}; the config needs shape {list(shape)} "
                      f"({expected} values)", "bad_state")
    array = decode_tensor(tensor).reshape(shape)
    if not np.isfinite(array).all():
        _refuse(index, field, "contains NaN or Inf; every value must be finite")
    return array


def _refuse(index: int, field: str, why: str) -> None:
    raise InvalidInputError(f"{state_key(index, field)} {why}; nothing was created", "bad_state")
