"""`hebbian.v1.HebbianService`: parse the request, delegate, answer.

The work happens elsewhere: `sample_requests` parses sample messages, the model core
(`service.server.core`) finds and changes models, `stream_pipeline` answers a stream.
A domain error raised on the way becomes the call's status through the one table of
`statuses`, so a refused request changes nothing.
"""

# ruff: noqa: N802  (method names are the RPC names of the proto)

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator

import grpc

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.codec.configs import config_from_proto
from service.codec.model_state import decode_states, layer_states_to_proto, model_state_to_proto
from service.codec.models import model_to_proto, snapshot_to_proto
from service.errors import DomainError, InvalidInputError
from service.server.core import bounds
from service.server.core.registry import ModelRegistry
from service.server.rpc import update_request
from service.server.rpc.move_methods import MoveMethods
from service.server.rpc.sample_requests import RequestParser, answer_fields
from service.server.rpc.statuses import status_code
from service.server.rpc.stream_pipeline import answer_stream

log = logging.getLogger(__name__)


def abort(context: grpc.ServicerContext, error: DomainError) -> None:
    """End the call with the status of `error` (raises, as `context.abort` does)."""
    context.abort(status_code(error), error.message)


def _statuses(method: Callable) -> Callable:
    """Turn a domain error raised by a unary method into the call's status."""

    @functools.wraps(method)
    def handler(self, request, context: grpc.ServicerContext):
        try:
            return method(self, request, context)
        except DomainError as err:
            abort(context, err)

    return handler


class HebbianServicer(MoveMethods, pb_grpc.HebbianServiceServicer):
    """The API service over a `ModelRegistry`.

    Args:
      registry: the server's models.
      max_samples_per_request: more samples in one request or stream message are
        refused with RESOURCE_EXHAUSTED.
      max_message_bytes: the server's message size limit; a request whose activations
        would not fit in a response is refused with RESOURCE_EXHAUSTED before it runs.
      read_ahead: streams keep several messages in flight (for group commit when every
        batch is fsynced); else each stream's handler applies its messages itself.
    """

    def __init__(
        self, registry: ModelRegistry, max_samples_per_request: int, max_message_bytes: int,
        read_ahead: bool = True,
    ):
        self._registry = registry
        self._read_ahead = read_ahead
        self._parser = RequestParser(registry, max_samples_per_request, max_message_bytes)

    # -- learning and inference ------------------------------------------------------

    @_statuses
    def Process(self, request: pb.ProcessRequest, context) -> pb.ProcessResponse:
        """Apply one request's samples and return their activations."""
        model, sample_request = self._parser.parse(request)
        answer = model.apply_if_idle(sample_request)
        if answer is None:  # queued behind the holder: withdrawn if the call ends first
            pending = model.pending(sample_request, context.time_remaining())
            model.submit(pending)
            if not pending.done and not context.add_callback(
                    functools.partial(model.withdraw, pending)):
                model.withdraw(pending)  # the call has ended already
            answer = model.wait(pending)
        return pb.ProcessResponse(**answer_fields(request, model, answer))

    def StreamProcess(
        self, requests: Iterator[pb.StreamProcessRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.StreamProcessResponse]:
        """Answer each message of a stream in order; a bad message ends the stream."""
        return answer_stream(requests, context, self._parser, abort, self._read_ahead)

    # -- model management ------------------------------------------------------------

    @_statuses
    def CreateModel(self, request: pb.CreateModelRequest, context) -> pb.CreateModelResponse:
        """Create a named model from its layer-stack config."""
        config = config_from_proto(request.config)
        initial = None
        if request.layers:  # the model starts from the given state, validated as input
            initial = functools.partial(decode_states, request.layers)
        model = self._registry.create(request.name, config, initial_state=initial)
        return pb.CreateModelResponse(model=model_to_proto(model.status()))

    @_statuses
    def GetModelState(
        self, request: pb.GetModelStateRequest, context
    ) -> pb.GetModelStateResponse:
        """A model's full state, read between batches; writes nothing."""
        model = self._registry.get(request.name)
        return model_state_to_proto(model.model_state())

    @_statuses
    def UpdateModel(self, request: pb.UpdateModelRequest, context) -> pb.UpdateModelResponse:
        """Change a model's learning-rate and schedule settings, keeping its state."""
        model = self._registry.get(request.model.name)
        changes = update_request.layer_changes(request, len(model.stack.params))
        status = model.update(changes)
        return pb.UpdateModelResponse(model=model_to_proto(status))

    @_statuses
    def GetModel(self, request: pb.GetModelRequest, context) -> pb.GetModelResponse:
        """A model's config, counters and live statistics."""
        model = self._registry.get(request.name)
        return pb.GetModelResponse(model=model_to_proto(model.status()))

    @_statuses
    def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        """Every model, sorted by name."""
        models = [model_to_proto(model.status()) for model in self._registry.list()]
        return pb.ListModelsResponse(models=models)

    @_statuses
    def DeleteModel(self, request: pb.DeleteModelRequest, context) -> pb.DeleteModelResponse:
        """Delete a model once its queued requests are done."""
        self._registry.delete(request.name)
        return pb.DeleteModelResponse()

    @_statuses
    def Reset(self, request: pb.ResetRequest, context) -> pb.ResetResponse:
        """Re-initialise a model's weights (after the requests queued before it)."""
        model = self._registry.get(request.name)
        seed = request.seed if request.HasField("seed") else None
        if seed is not None:
            bounds.check_reset_seed(seed, len(model.stack.params))
        status = model.reset(seed)
        return pb.ResetResponse(model=model_to_proto(status))

    @_statuses
    def Snapshot(self, request: pb.SnapshotRequest, context) -> pb.SnapshotResponse:
        """Persist a model's state now (after its queued requests); optionally return it."""
        model = self._registry.get(request.name)
        info, arrays = model.snapshot()
        layers = layer_states_to_proto(arrays, raw=False) if request.include_weights else []
        return pb.SnapshotResponse(snapshot=snapshot_to_proto(info), layers=layers)

    @_statuses
    def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, context
    ) -> pb.ListSnapshotsResponse:
        """A model's kept snapshots, oldest first."""
        model = self._registry.get(request.name)
        snapshots = model.store.list_snapshots() if model.store is not None else []
        return pb.ListSnapshotsResponse(snapshots=map(snapshot_to_proto, snapshots))

    @_statuses
    def Restore(self, request: pb.RestoreRequest, context) -> pb.RestoreResponse:
        """Return a model to the state of one of its snapshots (after its queued requests)."""
        model = self._registry.get(request.name)
        if not request.snapshot_id:
            raise InvalidInputError("Restore needs a snapshot_id (see ListSnapshots)")
        status = model.restore(request.snapshot_id)
        return pb.RestoreResponse(model=model_to_proto(status))
