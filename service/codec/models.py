"""What the server reports about its models: a model's status and a snapshot's description.

(A model's config is in `configs`, its full state in `model_state`, tensors in `tensors`.)
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from service.api import hebbian_pb2 as pb
from service.codec.configs import config_to_proto

if TYPE_CHECKING:  # the client imports the codec without the server or the state layer
    from service.server.core.session import ModelStatus
    from service.state.snapshot import SnapshotInfo


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


def snapshot_to_proto(info: SnapshotInfo) -> pb.SnapshotInfo:
    """The API form of a snapshot's description."""
    message = pb.SnapshotInfo(snapshot_id=info.snapshot_id, step=info.step)
    message.create_time.FromNanoseconds(int(info.create_time * 1e9))
    return message
