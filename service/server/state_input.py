"""A model's state sent by a caller (`CreateModel` with `layers`), decoded and validated.

The state is input like any other: each layer's arrays are checked against the layer the
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

from collections.abc import Sequence

import numpy as np

from service.api import hebbian_pb2 as pb
from service.errors import InvalidInputError
from service.model.layer_state import FIELDS, HebbianState, state_key, state_shapes
from service.model.params import HebbianParams

_LE_FLOAT32 = np.dtype("<f4")
_ARRAYS = tuple(field for field in FIELDS if field != "step")


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
    if tensor.raw:
        array = np.frombuffer(tensor.raw, _LE_FLOAT32).astype(np.float32)
    else:
        array = np.array(tensor.values, np.float32)
    array = array.reshape(shape)
    if not np.isfinite(array).all():
        _refuse(index, field, "contains NaN or Inf; every value must be finite")
    return array


def _refuse(index: int, field: str, why: str) -> None:
    raise InvalidInputError(f"{state_key(index, field)} {why}; nothing was created", "bad_state")
