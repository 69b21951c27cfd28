import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("shape", "values", "raw")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    raw: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., raw: _Optional[bytes] = ...) -> None: ...

class ProcessRequest(_message.Message):
    __slots__ = ("model", "samples", "learn", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LEARN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    samples: Tensor
    learn: bool
    request_id: str
    def __init__(self, model: _Optional[str] = ..., samples: _Optional[_Union[Tensor, _Mapping]] = ..., learn: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class ProcessResponse(_message.Message):
    __slots__ = ("activations", "step", "request_id", "model", "skipped_samples")
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    activations: Tensor
    step: int
    request_id: str
    model: str
    skipped_samples: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, activations: _Optional[_Union[Tensor, _Mapping]] = ..., step: _Optional[int] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ..., skipped_samples: _Optional[_Iterable[int]] = ...) -> None: ...

class StreamProcessRequest(_message.Message):
    __slots__ = ("model", "samples", "learn", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LEARN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    samples: Tensor
    learn: bool
    request_id: str
    def __init__(self, model: _Optional[str] = ..., samples: _Optional[_Union[Tensor, _Mapping]] = ..., learn: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class StreamProcessResponse(_message.Message):
    __slots__ = ("activations", "step", "request_id", "model", "skipped_samples")
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    activations: Tensor
    step: int
    request_id: str
    model: str
    skipped_samples: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, activations: _Optional[_Union[Tensor, _Mapping]] = ..., step: _Optional[int] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ..., skipped_samples: _Optional[_Iterable[int]] = ...) -> None: ...

class LayerConfig(_message.Message):
    __slots__ = ("units", "rule", "learning_rate", "decay_steps", "lateral", "lateral_strength", "lateral_learning_rate", "connectivity", "connectivity_prob", "activation", "stabilizer", "norm_target", "weight_bound", "bcm_threshold_rate", "seed", "granularity")
    UNITS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    DECAY_STEPS_FIELD_NUMBER: _ClassVar[int]
    LATERAL_FIELD_NUMBER: _ClassVar[int]
    LATERAL_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    LATERAL_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    CONNECTIVITY_FIELD_NUMBER: _ClassVar[int]
    CONNECTIVITY_PROB_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    STABILIZER_FIELD_NUMBER: _ClassVar[int]
    NORM_TARGET_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BOUND_FIELD_NUMBER: _ClassVar[int]
    BCM_THRESHOLD_RATE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    units: int
    rule: str
    learning_rate: float
    decay_steps: float
    lateral: str
    lateral_strength: float
    lateral_learning_rate: float
    connectivity: str
    connectivity_prob: float
    activation: str
    stabilizer: str
    norm_target: float
    weight_bound: float
    bcm_threshold_rate: float
    seed: int
    granularity: str
    def __init__(self, units: _Optional[int] = ..., rule: _Optional[str] = ..., learning_rate: _Optional[float] = ..., decay_steps: _Optional[float] = ..., lateral: _Optional[str] = ..., lateral_strength: _Optional[float] = ..., lateral_learning_rate: _Optional[float] = ..., connectivity: _Optional[str] = ..., connectivity_prob: _Optional[float] = ..., activation: _Optional[str] = ..., stabilizer: _Optional[str] = ..., norm_target: _Optional[float] = ..., weight_bound: _Optional[float] = ..., bcm_threshold_rate: _Optional[float] = ..., seed: _Optional[int] = ..., granularity: _Optional[str] = ...) -> None: ...

class ModelConfig(_message.Message):
    __slots__ = ("input_dim", "layers", "engine")
    INPUT_DIM_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    input_dim: int
    layers: _containers.RepeatedCompositeFieldContainer[LayerConfig]
    engine: str
    def __init__(self, input_dim: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[LayerConfig, _Mapping]]] = ..., engine: _Optional[str] = ...) -> None: ...

class LayerStats(_message.Message):
    __slots__ = ("kernel_norm", "lateral_norm", "orthonormality_error", "reconstruction_error", "explained_variance", "weight_drift_per_second")
    KERNEL_NORM_FIELD_NUMBER: _ClassVar[int]
    LATERAL_NORM_FIELD_NUMBER: _ClassVar[int]
    ORTHONORMALITY_ERROR_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_ERROR_FIELD_NUMBER: _ClassVar[int]
    EXPLAINED_VARIANCE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DRIFT_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    kernel_norm: float
    lateral_norm: float
    orthonormality_error: float
    reconstruction_error: float
    explained_variance: float
    weight_drift_per_second: float
    def __init__(self, kernel_norm: _Optional[float] = ..., lateral_norm: _Optional[float] = ..., orthonormality_error: _Optional[float] = ..., reconstruction_error: _Optional[float] = ..., explained_variance: _Optional[float] = ..., weight_drift_per_second: _Optional[float] = ...) -> None: ...

class SnapshotInfo(_message.Message):
    __slots__ = ("snapshot_id", "step", "create_time")
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    step: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, snapshot_id: _Optional[str] = ..., step: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "config", "step", "samples_inferred", "samples_skipped", "layer_stats", "last_snapshot", "create_time", "is_default", "recent_skipped_fraction", "refusing_updates")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_INFERRED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    LAYER_STATS_FIELD_NUMBER: _ClassVar[int]
    LAST_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    RECENT_SKIPPED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    REFUSING_UPDATES_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: ModelConfig
    step: int
    samples_inferred: int
    samples_skipped: int
    layer_stats: _containers.RepeatedCompositeFieldContainer[LayerStats]
    last_snapshot: SnapshotInfo
    create_time: _timestamp_pb2.Timestamp
    is_default: bool
    recent_skipped_fraction: float
    refusing_updates: bool
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[ModelConfig, _Mapping]] = ..., step: _Optional[int] = ..., samples_inferred: _Optional[int] = ..., samples_skipped: _Optional[int] = ..., layer_stats: _Optional[_Iterable[_Union[LayerStats, _Mapping]]] = ..., last_snapshot: _Optional[_Union[SnapshotInfo, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., is_default: _Optional[bool] = ..., recent_skipped_fraction: _Optional[float] = ..., refusing_updates: _Optional[bool] = ...) -> None: ...

class CreateModelRequest(_message.Message):
    __slots__ = ("name", "config", "layers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: ModelConfig
    layers: _containers.RepeatedCompositeFieldContainer[LayerState]
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[ModelConfig, _Mapping]] = ..., layers: _Optional[_Iterable[_Union[LayerState, _Mapping]]] = ...) -> None: ...

class CreateModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class GetModelStateRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetModelStateResponse(_message.Message):
    __slots__ = ("name", "config", "step", "layers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: ModelConfig
    step: int
    layers: _containers.RepeatedCompositeFieldContainer[LayerState]
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[ModelConfig, _Mapping]] = ..., step: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[LayerState, _Mapping]]] = ...) -> None: ...

class UpdateModelRequest(_message.Message):
    __slots__ = ("model", "update_mask")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    model: Model
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("name", "include_weights")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    include_weights: bool
    def __init__(self, name: _Optional[str] = ..., include_weights: _Optional[bool] = ...) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("snapshot", "layers")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    snapshot: SnapshotInfo
    layers: _containers.RepeatedCompositeFieldContainer[LayerState]
    def __init__(self, snapshot: _Optional[_Union[SnapshotInfo, _Mapping]] = ..., layers: _Optional[_Iterable[_Union[LayerState, _Mapping]]] = ...) -> None: ...

class LayerState(_message.Message):
    __slots__ = ("kernel", "lateral", "mask", "theta", "step")
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    LATERAL_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    THETA_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    kernel: Tensor
    lateral: Tensor
    mask: Tensor
    theta: Tensor
    step: int
    def __init__(self, kernel: _Optional[_Union[Tensor, _Mapping]] = ..., lateral: _Optional[_Union[Tensor, _Mapping]] = ..., mask: _Optional[_Union[Tensor, _Mapping]] = ..., theta: _Optional[_Union[Tensor, _Mapping]] = ..., step: _Optional[int] = ...) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListSnapshotsResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[SnapshotInfo]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[SnapshotInfo, _Mapping]]] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("name", "snapshot_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    snapshot_id: str
    def __init__(self, name: _Optional[str] = ..., snapshot_id: _Optional[str] = ...) -> None: ...

class RestoreResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class ResetRequest(_message.Message):
    __slots__ = ("name", "seed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    name: str
    seed: int
    def __init__(self, name: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class ResetResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class ExportModelRequest(_message.Message):
    __slots__ = ("name", "to_shard")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TO_SHARD_FIELD_NUMBER: _ClassVar[int]
    name: str
    to_shard: int
    def __init__(self, name: _Optional[str] = ..., to_shard: _Optional[int] = ...) -> None: ...

class ExportModelResponse(_message.Message):
    __slots__ = ("name", "config", "step", "snapshot")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: ModelConfig
    step: int
    snapshot: bytes
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[ModelConfig, _Mapping]] = ..., step: _Optional[int] = ..., snapshot: _Optional[bytes] = ...) -> None: ...

class ImportModelRequest(_message.Message):
    __slots__ = ("name", "config", "snapshot", "from_shard")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    FROM_SHARD_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: ModelConfig
    snapshot: bytes
    from_shard: int
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[ModelConfig, _Mapping]] = ..., snapshot: _Optional[bytes] = ..., from_shard: _Optional[int] = ...) -> None: ...

class ImportModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class UnfreezeModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnfreezeModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class ReleaseModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ReleaseModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
