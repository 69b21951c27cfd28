"""How the Python clients put samples, activations and model configs on the wire.

Samples travel as raw little-endian float32 bytes (`Tensor.raw`), the fast encoding;
activations come back the same way (or as `values`, which grpcurl sends). Model configs
are `{"input_dim": ..., "layers": [{...}, ...]}` dicts, checked against the API's
`LayerConfig` fields before anything is sent. A model's full state travels as one
`LayerState` per layer; the clients hold it in the one flat layout of
`service.model.layer_state` ({"layer{i}.{field}": array}, as `.npz` weights files do).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from service.api import hebbian_pb2
from service.model.layer_state import FIELDS, state_key

_LITTLE_F32 = np.dtype("<f4")


@dataclass(frozen=True)
class ProcessResult:
    """One answer of Process or of one StreamProcess message.

    `activations` has shape (n, output_width), or (output_width,) when the samples
    were sent as a single 1-D sample. `skipped` lists the learning samples whose
    update would have made a weight non-finite (not applied).
    """

    activations: np.ndarray
    step: int
    model: str
    request_id: str
    skipped: tuple[int, ...]


@dataclass(frozen=True)
class ModelState:
    """A served model's full state (GetModelState): its config (the `StackConfig.to_dict()`
    form, every setting and seed spelled out), its step, and every layer's arrays keyed
    "layer{i}.{field}" (kernel, lateral, mask, theta float32; step int64)."""

    name: str
    config: dict
    step: int
    arrays: dict[str, np.ndarray]


def model_state(response: Any) -> ModelState:
    """A `GetModelStateResponse` as a `ModelState`."""
    arrays: dict[str, np.ndarray] = {}
    for index, layer in enumerate(response.layers):
        for field in FIELDS:
            key = state_key(index, field)
            arrays[key] = (np.array(layer.step, np.int64) if field == "step"
                           else decode_tensor(getattr(layer, field)))
    return ModelState(response.name, config_from_proto(response.config), int(response.step),
                      arrays)


def layer_states_to_proto(arrays: Mapping[str, Any]) -> list[hebbian_pb2.LayerState]:
    """The flat state `arrays` ({"layer{i}.{field}": array}) as one `LayerState` per layer
    (tensors as raw float32); a missing field raises ValueError naming it."""
    layers, index = [], 0
    while state_key(index, "kernel") in arrays:
        message = hebbian_pb2.LayerState()
        for field in FIELDS:
            key = state_key(index, field)
            if key not in arrays:
                raise ValueError(f"the state has no {key!r}")
            if field == "step":
                message.step = int(np.asarray(arrays[key]))
            else:
                array = np.ascontiguousarray(arrays[key], dtype=_LITTLE_F32)
                getattr(message, field).CopyFrom(
                    hebbian_pb2.Tensor(shape=list(array.shape), raw=array.tobytes()))
        layers.append(message)
        index += 1
    if not layers:
        raise ValueError(f"the state has no {state_key(0, 'kernel')!r}")
    return layers


def encode_samples(samples: Any) -> hebbian_pb2.Tensor:
    """A (n, width) or (width,) array-like as a raw little-endian float32 `Tensor`."""
    array = np.ascontiguousarray(samples, dtype=_LITTLE_F32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"samples must be 1-D or 2-D; got shape {array.shape}")
    return hebbian_pb2.Tensor(shape=list(array.shape), raw=array.tobytes())


def decode_tensor(tensor: hebbian_pb2.Tensor) -> np.ndarray:
    """A `Tensor` (raw or values) as a float32 numpy array of its shape."""
    if tensor.raw:
        array = np.frombuffer(tensor.raw, dtype=_LITTLE_F32).astype(np.float32)
    else:
        array = np.asarray(tensor.values, dtype=np.float32)
    shape = tuple(tensor.shape) or (array.size,)
    return array.reshape(shape)


_LAYER_FIELDS = {field.name: field for field in hebbian_pb2.LayerConfig.DESCRIPTOR.fields}


def config_to_proto(config: Any) -> hebbian_pb2.ModelConfig:
    """A model config as `ModelConfig`.

    Accepts `{"input_dim": int, "layers": [{"units": 4, "rule": "sanger", ...}, ...]}`
    (the `StackConfig.to_dict()` form), a `StackConfig`, or a `ModelConfig`. Layer keys
    are the `Hebbian` layer's arguments; None values are left unset. A key the API
    does not carry raises ValueError naming it.
    """
    if isinstance(config, hebbian_pb2.ModelConfig):
        return config
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, Mapping) or "input_dim" not in config or "layers" not in config:
        raise ValueError("a model config needs input_dim and layers")
    input_dim = config["input_dim"]
    if isinstance(input_dim, bool) or not isinstance(input_dim, numbers.Integral):
        raise ValueError(f"input_dim must be an integer; got {input_dim!r}")
    engine = config.get("engine") or ""
    if not isinstance(engine, str):
        raise ValueError(f"engine must be a string; got {engine!r}")
    proto = hebbian_pb2.ModelConfig(input_dim=int(input_dim), engine=engine)
    if not isinstance(config["layers"], Sequence) or isinstance(config["layers"], str):
        raise ValueError("layers must be a list of layer settings")
    for index, layer in enumerate(config["layers"]):
        if not isinstance(layer, Mapping):
            raise ValueError(f"layer {index}: expected KEY: VALUE settings; got {layer!r}")
        message = proto.layers.add()
        for key, value in layer.items():
            if key not in _LAYER_FIELDS:
                raise ValueError(f"layer {index}: setting {key!r} is not part of the API")
            if value is not None:
                _set_field(message, index, key, value)
    return proto


_KINDS = {
    FieldDescriptor.CPPTYPE_INT32: ("an integer", numbers.Integral),
    FieldDescriptor.CPPTYPE_INT64: ("an integer", numbers.Integral),
    FieldDescriptor.CPPTYPE_FLOAT: ("a number", numbers.Real),
    FieldDescriptor.CPPTYPE_DOUBLE: ("a number", numbers.Real),
    FieldDescriptor.CPPTYPE_STRING: ("a string", str),
    FieldDescriptor.CPPTYPE_BOOL: ("true or false", bool),
}


def _set_field(message: Any, index: int, key: str, value: Any) -> None:
    """Sets one layer setting; a value of the wrong kind raises ValueError naming it."""
    kind, types = _KINDS.get(_LAYER_FIELDS[key].cpp_type, ("a value", object))
    wrong = isinstance(value, bool) and types is not bool
    if wrong or not isinstance(value, types):
        raise ValueError(f"layer {index}: {key} must be {kind}; got {value!r}")
    try:
        setattr(message, key, value.item() if isinstance(value, np.generic) else value)
    except (TypeError, ValueError) as error:  # e.g. out of the int32 range
        raise ValueError(f"layer {index}: {key}={value!r}: {error}") from None


def config_from_proto(proto: hebbian_pb2.ModelConfig) -> dict:
    """Inverse of `config_to_proto`: only the settings the message sets."""
    layers = []
    for message in proto.layers:
        layer = {}
        for name, field in _LAYER_FIELDS.items():
            value = getattr(message, name)
            if field.has_presence:
                if message.HasField(name):
                    layer[name] = value
            elif value:
                layer[name] = value
        layers.append(layer)
    config = {"input_dim": int(proto.input_dim), "layers": layers}
    if proto.engine:
        config["engine"] = proto.engine
    return config


def process_result(response: Any, *, single: bool) -> ProcessResult:
    """A Process or StreamProcess answer as a `ProcessResult` (1-D for a 1-D sample)."""
    activations = decode_tensor(response.activations)
    if single and activations.ndim == 2 and activations.shape[0] == 1:
        activations = activations[0]
    return ProcessResult(
        activations=activations,
        step=int(response.step),
        model=response.model,
        request_id=response.request_id,
        skipped=tuple(int(i) for i in response.skipped_samples),
    )
