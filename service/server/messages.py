"""Model messages of the API <-> the model's config and status (tensors are in `tensors`)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from service.api import hebbian_pb2 as pb
from service.model import StackConfig
from service.model.layer_state import HebbianState
from service.server import tensors
from service.server.core.session import ModelState, ModelStatus
from service.state.snapshot import SnapshotInfo

_OPTIONAL_NUMBERS = tuple(
    name for name, f in pb.LayerConfig.DESCRIPTOR.fields_by_name.items()
    if f.has_presence and name != "units"
)
_STRINGS = tuple(
    name for name, f in pb.LayerConfig.DESCRIPTOR.fields_by_name.items()
    if f.type == f.TYPE_STRING
)


def config_from_proto(config: pb.ModelConfig) -> dict:
    """A `StackConfig.to_dict()`-style dict; unset fields are left to the layer's defaults."""
    layers = []
    for layer in config.layers:
        spec: dict = {"units": layer.units}
        spec.update({name: getattr(layer, name) for name in _STRINGS if getattr(layer, name)})
        for name in _OPTIONAL_NUMBERS:
            if layer.HasField(name):
                value = getattr(layer, name)
                # float fields are float32 on the wire: keep their shortest decimal form
                spec[name] = int(value) if name == "seed" else float(str(np.float32(value)))
        layers.append(spec)
    return {"input_dim": config.input_dim, "layers": layers, "engine": config.engine or None}


def config_to_proto(config: StackConfig) -> pb.ModelConfig:
    """The API form of a (resolved) stack config."""
    layers = []
    for spec in config.layers:
        layer = pb.LayerConfig()
        for name, value in spec.items():
            if value is not None and name in pb.LayerConfig.DESCRIPTOR.fields_by_name:
                setattr(layer, name, value)
        layers.append(layer)
    return pb.ModelConfig(input_dim=int(config.input_dim), layers=layers, engine=config.engine)


def model_to_proto(status: ModelStatus) -> pb.Model:
    """The API form of a model's status."""
    model = pb.Model(
        name=status.name,
        config=config_to_proto(status.config),
        step=status.step,
        samples_inferred=status.samples_inferred,
        samples_skipped=status.samples_skipped,
        layer_stats=[pb.LayerStats(**asdict(stats)) for stats in status.layer_stats],
        is_default=status.is_default,
        recent_skipped_fraction=status.recent_skipped_fraction,
        refusing_updates=status.refusing_updates,
    )
    model.create_time.FromNanoseconds(int(status.create_time * 1e9))
    if status.last_snapshot is not None:
        model.last_snapshot.CopyFrom(snapshot_to_proto(status.last_snapshot))
    return model


def layer_state_to_proto(state: HebbianState) -> pb.LayerState:
    """The API form of one layer's state, tensors as `values` (what grpcurl shows)."""
    return pb.LayerState(
        kernel=tensors.encode(np.asarray(state.kernel), raw=False),
        lateral=tensors.encode(np.asarray(state.lateral), raw=False),
        mask=tensors.encode(np.asarray(state.mask), raw=False),
        theta=tensors.encode(np.asarray(state.theta), raw=False),
        step=int(state.step),
    )


def model_state_to_proto(state: ModelState) -> pb.GetModelStateResponse:
    """The API form of a model's full state."""
    return pb.GetModelStateResponse(
        name=state.name, config=config_to_proto(state.config), step=state.step,
        layers=[layer_state_to_proto(layer) for layer in state.layers],
    )


def snapshot_to_proto(info: SnapshotInfo) -> pb.SnapshotInfo:
    """The API form of a snapshot's description."""
    message = pb.SnapshotInfo(snapshot_id=info.snapshot_id, step=info.step)
    message.create_time.FromNanoseconds(int(info.create_time * 1e9))
    return message
