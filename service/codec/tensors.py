"""`hebbian.v1.Tensor` <-> numpy, for the client and the server alike.

Encoding: `encode_tensor` writes any float32 array with its shape, as `raw`
(little-endian float32 bytes, the fast form) or as `values` (what grpcurl reads);
`encode_samples` is the client's form of a batch of samples. Decoding: `decode_tensor`
reads a tensor back as it is (the client's activations, a layer's state), and
`decode_samples` reads and validates the samples of a request for a model's input width.

Samples decode to a float32 array of shape (n, width) for the model's input width:
`raw` (little-endian float32 bytes) through `np.frombuffer`, without a copy, or
`values`. The shape may be `[n, width]`, `[width]` (one sample) or omitted (the values
are read as rows of `width`). Every refusal raises a domain error whose message says
what was wrong and what was expected: `LimitExceededError` for too many samples, `InvalidInputError`
for anything else.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.api import hebbian_pb2 as pb
from service.errors import InvalidInputError, LimitExceededError

_LE_FLOAT32 = np.dtype("<f4")
_ALL_TRUE = np.logical_and.reduce  # `ndarray.all` without its Python wrapper (per message)


def decode_samples(tensor: pb.Tensor, width: int, max_samples: int) -> np.ndarray:
    """The samples of `tensor` as a read-only float32 array (n, width), validated.

    Raises:
      InvalidInputError: both encodings set, a `raw` length that is not
        a multiple of 4, no samples, a bad shape or width, values not matching the
        shape, NaN or Inf. LimitExceededError: more than `max_samples` samples.
    """
    raw, values, shape = tensor.raw, tensor.values, tensor.shape
    if raw and values:
        raise InvalidInputError("set either samples.values or samples.raw, not both",
                                "bad_encoding")
    if len(raw) % 4:
        raise InvalidInputError(
            f"samples.raw has {len(raw)} bytes, not a multiple of 4 (little-endian float32)",
            "bad_encoding",
        )
    count = len(raw) // 4 if raw else len(values)
    if len(shape) == 2 and shape[1] == width and shape[0] > 0 and shape[0] * width == count:
        rows = shape[0]  # the usual [n, width]: what `_rows` would find, without its checks
    else:
        rows = _rows(list(shape), count, width)
    if rows > max_samples:
        raise LimitExceededError(
            f"too many samples in one request: {rows} > {max_samples}; split them into "
            "several requests",
            "too_many",
            rows,
        )
    if raw:
        array = np.frombuffer(raw, _LE_FLOAT32)
    else:
        array = np.array(values, np.float32)
        array.flags.writeable = False
    array = array.reshape(rows, width)
    if not _ALL_TRUE(np.isfinite(array), None):
        row = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise InvalidInputError(
            f"sample {row} contains NaN or Inf; every value must be finite", "non_finite", rows
        )
    return array


def _rows(shape: list[int], count: int, width: int) -> int:
    """Number of samples described by `shape` and `count` values, or InvalidInputError."""
    estimate = count // width
    if any(d < 0 for d in shape) or len(shape) > 2:
        raise InvalidInputError(
            f"samples.shape must be [n, {width}] or [{width}] with positive dimensions; "
            f"got {shape}",
            "bad_shape",
            estimate,
        )
    if count == 0 or 0 in shape:
        raise InvalidInputError(
            "no samples: set samples.values or samples.raw with at least one sample of "
            f"width {width}",
            "empty",
        )
    if shape and shape[-1] != width:
        raise InvalidInputError(
            f"wrong sample width: samples.shape {shape} has width {shape[-1]}, the model's "
            f"input width is {width}",
            "wrong_width",
            estimate,
        )
    if not shape:
        if count % width:
            raise InvalidInputError(
                f"wrong sample width: {count} values are not a whole number of samples of "
                f"the model's input width {width}",
                "wrong_width",
                estimate,
            )
        return estimate
    rows = shape[0] if len(shape) == 2 else 1
    if rows * width != count:
        raise InvalidInputError(
            f"samples.shape {shape} needs {rows * width} values; got {count} "
            "(ragged or mismatched samples)",
            "ragged",
            estimate,
        )
    return rows


def encode_tensor(array: Any, raw: bool = True) -> pb.Tensor:
    """A Tensor of an array-like as float32, with its shape: `raw` bytes or `values`."""
    array = np.ascontiguousarray(array, _LE_FLOAT32)
    if raw:
        return pb.Tensor(shape=array.shape, raw=array.tobytes())
    return pb.Tensor(shape=array.shape, values=array.ravel().tolist())


def encode_samples(samples: Any) -> pb.Tensor:
    """A (n, width) or (width,) array-like as a raw little-endian float32 `Tensor`.

    Raises:
      InvalidInputError: the samples are not 1-D or 2-D.
    """
    array = np.ascontiguousarray(samples, dtype=_LE_FLOAT32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise InvalidInputError(f"samples must be 1-D or 2-D; got shape {array.shape}")
    return encode_tensor(array)


def decode_tensor(tensor: pb.Tensor) -> np.ndarray:
    """A `Tensor` (raw or values) as a writable float32 array of its shape (a flat array
    when the shape is omitted)."""
    if tensor.raw:
        array = np.frombuffer(tensor.raw, dtype=_LE_FLOAT32).astype(np.float32)
    else:
        array = np.asarray(tensor.values, dtype=np.float32)
    shape = tuple(tensor.shape) or (array.size,)
    return array.reshape(shape)
