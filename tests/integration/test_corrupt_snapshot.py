"""One bad snapshot never breaks a listing: ListSnapshots leaves it out (with a warning
in the server's log) and lists the others, and Restore to it is refused with DATA_LOSS
and changes nothing, while Restore to a good one still works."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from service.api import hebbian_pb2 as pb
from service.client import encode_samples


def learn(stub, name: str, n: int = 3) -> None:
    x = np.random.default_rng(n).normal(size=(n, 6)).astype(np.float32)
    stub.Process(pb.ProcessRequest(model=name, samples=encode_samples(x)), timeout=60)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_corrupt_snapshot_is_left_out_of_the_listing_and_cannot_be_restored(
    stub, make_model, hebbian_server, damage
):
    name = make_model()
    ids = []
    for _ in range(3):
        learn(stub, name)
        ids.append(stub.Snapshot(pb.SnapshotRequest(name=name), timeout=60).snapshot.snapshot_id)
    path = hebbian_server.data_dir.models_dir / name / "snapshots" / f"{ids[1]}.hsnap"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) // 3]
    else:
        data = bytearray(b"not a snapshot")
    path.write_bytes(bytes(data))

    listed = stub.ListSnapshots(pb.ListSnapshotsRequest(name=name), timeout=60).snapshots
    assert [s.snapshot_id for s in listed] == [ids[0], ids[2]]

    step = stub.GetModel(pb.GetModelRequest(name=name)).model.step
    with pytest.raises(grpc.RpcError) as info:
        stub.Restore(pb.RestoreRequest(name=name, snapshot_id=ids[1]), timeout=60)
    assert info.value.code() == grpc.StatusCode.DATA_LOSS
    assert f"snapshot {ids[1]} cannot be restored, nothing changed" in info.value.details()
    assert stub.GetModel(pb.GetModelRequest(name=name)).model.step == step

    restored = stub.Restore(pb.RestoreRequest(name=name, snapshot_id=ids[0]), timeout=60)
    assert restored.model.step == 3
