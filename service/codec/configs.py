"""Model configs <-> `hebbian.v1.ModelConfig`, one rule set for the client and the server.

A config is `{"input_dim": int, "layers": [{"units": 4, "rule": "sanger", ...}, ...],
"engine": str}` (the `StackConfig.to_dict()` form). The rules, both ways:

- a layer key is a field of the API's `LayerConfig`; any other key is refused with
  `InvalidInputError` naming it (a ValueError, so client callers see a ValueError), and
  so is a value of the wrong kind. None values are left unset.
- decoding gives only what the message sets: `units`, the strings that are not empty,
  the optional numbers that are present, and `engine` when it is set; the layer's own
  defaults fill the rest.
- float fields are float32 on the wire: a decoded float is the shortest decimal that
  reads back as the same float32 (`wire_float`), so 0.001 sent comes back 0.001, and the
  server builds, stores and replays a model from exactly the numbers the caller wrote.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from service.api import hebbian_pb2 as pb
from service.errors import InvalidInputError

LAYER_FIELDS = pb.LayerConfig.DESCRIPTOR.fields_by_name

_FLOATS = (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE)
_KINDS = {
    FieldDescriptor.CPPTYPE_INT32: ("an integer", numbers.Integral),
    FieldDescriptor.CPPTYPE_INT64: ("an integer", numbers.Integral),
    FieldDescriptor.CPPTYPE_FLOAT: ("a number", numbers.Real),
    FieldDescriptor.CPPTYPE_DOUBLE: ("a number", numbers.Real),
    FieldDescriptor.CPPTYPE_STRING: ("a string", str),
    FieldDescriptor.CPPTYPE_BOOL: ("true or false", bool),
}


def wire_float(value: float) -> float:
    """A float32 field's value as the shortest decimal that is the same float32."""
    return float(str(np.float32(value)))


def config_to_proto(config: Any) -> pb.ModelConfig:
    """A model config as `ModelConfig`.

    Accepts the `StackConfig.to_dict()` form, anything with a `to_dict()` giving it
    (a `StackConfig`), or a `ModelConfig` (returned as it is).

    Raises:
      InvalidInputError: a key the API does not carry, or a value of the wrong kind,
        named with its layer.
    """
    if isinstance(config, pb.ModelConfig):
        return config
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, Mapping) or "input_dim" not in config or "layers" not in config:
        raise InvalidInputError("a model config needs input_dim and layers", "bad_config")
    input_dim = config["input_dim"]
    if isinstance(input_dim, bool) or not isinstance(input_dim, numbers.Integral):
        raise InvalidInputError(f"input_dim must be an integer; got {input_dim!r}", "bad_config")
    engine = config.get("engine") or ""
    if not isinstance(engine, str):
        raise InvalidInputError(f"engine must be a string; got {engine!r}", "bad_config")
    proto = pb.ModelConfig(input_dim=int(input_dim), engine=engine)
    if not isinstance(config["layers"], Sequence) or isinstance(config["layers"], str):
        raise InvalidInputError("layers must be a list of layer settings", "bad_config")
    for index, layer in enumerate(config["layers"]):
        if not isinstance(layer, Mapping):
            raise InvalidInputError(
                f"layer {index}: expected KEY: VALUE settings; got {layer!r}", "bad_config")
        message = proto.layers.add()
        for key, value in layer.items():
            if key not in LAYER_FIELDS:
                raise InvalidInputError(
                    f"layer {index}: setting {key!r} is not part of the API", "bad_config")
            if value is not None:
                _set_field(message, index, key, value)
    return proto


def _set_field(message: pb.LayerConfig, index: int, key: str, value: Any) -> None:
    """Sets one layer setting; a value of the wrong kind raises InvalidInputError naming it."""
    kind, types = _KINDS.get(LAYER_FIELDS[key].cpp_type, ("a value", object))
    wrong = isinstance(value, bool) and types is not bool
    if wrong or not isinstance(value, types):
        raise InvalidInputError(f"layer {index}: {key} must be {kind}; got {value!r}",
                                "bad_config")
    try:
        setattr(message, key, value.item() if isinstance(value, np.generic) else value)
    except (TypeError, ValueError) as error:  # e.g. out of the int32 range
        raise InvalidInputError(f"layer {index}: {key}={value!r}: {error}",
                                "bad_config") from None


def config_from_proto(proto: pb.ModelConfig) -> dict:
    """Inverse of `config_to_proto`: only the settings the message sets (see the module)."""
    layers = []
    for message in proto.layers:
        layer: dict = {"units": int(message.units)}
        for name, field in LAYER_FIELDS.items():
            if name == "units":
                continue
            if field.has_presence:
                if message.HasField(name):
                    value = getattr(message, name)
                    layer[name] = wire_float(value) if field.cpp_type in _FLOATS else int(value)
            elif getattr(message, name):
                layer[name] = getattr(message, name)
        layers.append(layer)
    config = {"input_dim": int(proto.input_dim), "layers": layers}
    if proto.engine:
        config["engine"] = proto.engine
    return config
