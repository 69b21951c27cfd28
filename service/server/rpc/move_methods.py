"""The API methods of slot moves (`hebbian shards move`, service/sharding/moves.py).

A model moves between shards in four calls, each admin-only (`service.server.auth`):

- `ExportModel` on the source freezes the model (`LiveModel.freeze`: the requests queued
  before it are applied and acknowledged, every later write is UNAVAILABLE "model ... is
  moving to shard K", reads are served) and returns its full state as the bytes of a
  snapshot file: weights, counters, the exactly-once request window, seeds and
  hyper-parameters. Taken after the freeze, it misses nothing acknowledged, so no log tail
  is needed. Exporting a frozen model again returns the same state.
- `ImportModel` on the target verifies those bytes (checksum, model name, shapes) and
  creates the model with them as its first snapshot, durable before it answers. The
  ownership check (`service.sharding.ownership`) accepts it only on a shard that does not
  own the model's slot yet, so the copy takes no writes until the table switch.
- `UnfreezeModel` on the source: the move is given up, the model takes writes again.
- `ReleaseModel`: removes a model in transit (frozen, or imported) from a shard that no
  longer (or not yet) owns its slot: the source's copy after the switch, or the target's
  copy of a move given up.

Nothing here knows about slots; the ownership interceptor checks them.
"""

# ruff: noqa: N802  (method names are the RPC names of the proto)

from __future__ import annotations

from service.api import hebbian_pb2 as pb
from service.codec.configs import config_from_proto, config_to_proto
from service.codec.models import model_to_proto
from service.errors import DomainError, InvalidInputError
from service.server.rpc.statuses import status_code
from service.state.snapshot import CorruptSnapshotError, decode_snapshot, encode_snapshot


def moving_reason(name: str, to_shard: int) -> str:
    """What a caller of a frozen model is told (UNAVAILABLE)."""
    return (f"model {name!r} is moving to shard {to_shard}: writes are refused until the "
            "move is done; retry (through the router) in a moment")


def arrival_reason(name: str, from_shard: int) -> str:
    """What a caller of an imported model is told before the table gives it this shard."""
    return (f"model {name!r} is arriving from shard {from_shard}: the slot table does not "
            "give its slot to this shard yet; retry (through the router) in a moment")


class MoveMethods:
    """ExportModel, ImportModel, UnfreezeModel and ReleaseModel over `self._registry`
    (a mixin of `HebbianServicer`; each method's domain errors become its status)."""

    def ExportModel(self, request: pb.ExportModelRequest, context) -> pb.ExportModelResponse:
        """Freeze a model and return its full state (snapshot bytes)."""
        return self._guarded(context, self._export, request)

    def ImportModel(self, request: pb.ImportModelRequest, context) -> pb.ImportModelResponse:
        """Create a model from another shard's export, durably."""
        return self._guarded(context, self._import, request)

    def UnfreezeModel(
        self, request: pb.UnfreezeModelRequest, context
    ) -> pb.UnfreezeModelResponse:
        """A frozen model takes writes again."""
        return self._guarded(context, self._unfreeze, request)

    def ReleaseModel(self, request: pb.ReleaseModelRequest, context) -> pb.ReleaseModelResponse:
        """Remove a model in transit from this shard."""
        return self._guarded(context, self._release, request)

    # -- the work ------------------------------------------------------------------------

    def _guarded(self, context, method, request):
        try:
            return method(request)
        except DomainError as err:
            context.abort(status_code(err), err.message)

    def _export(self, request: pb.ExportModelRequest) -> pb.ExportModelResponse:
        name = request.name or self._registry.default_model
        model, (step, arrays, header) = self._registry.freeze(
            name, moving_reason(name, request.to_shard))
        header = {**header, "model": model.name, "model_create_time": header["create_time"]}
        data, _ = encode_snapshot(0, step, arrays, header)
        return pb.ExportModelResponse(name=model.name,
                                      config=config_to_proto(model.resolved_config()),
                                      step=step, snapshot=data)

    def _import(self, request: pb.ImportModelRequest) -> pb.ImportModelResponse:
        name = request.name
        try:
            header, arrays = decode_snapshot(request.snapshot, f"the snapshot of {name!r}")
        except CorruptSnapshotError as err:
            raise InvalidInputError(f"ImportModel: {err}; nothing created",
                                    "bad_snapshot") from None
        if header.get("model") != name:
            raise InvalidInputError(
                f"ImportModel: the snapshot is of model {header.get('model')!r}, not {name!r}",
                "bad_snapshot")
        model = self._registry.import_model(
            name, config_from_proto(request.config), header, arrays,
            arrival_reason(name, request.from_shard))
        return pb.ImportModelResponse(model=model_to_proto(model.status()))

    def _unfreeze(self, request: pb.UnfreezeModelRequest) -> pb.UnfreezeModelResponse:
        status = self._registry.get(request.name).unfreeze()
        return pb.UnfreezeModelResponse(model=model_to_proto(status))

    def _release(self, request: pb.ReleaseModelRequest) -> pb.ReleaseModelResponse:
        self._registry.release(request.name)
        return pb.ReleaseModelResponse()
