"""`OwnershipInterceptor`: a shard refuses every request for a model it does not own.

The model is read from the request message itself (field `model` of Process and
StreamProcess, `name` of the model methods, `model.name` of UpdateModel; empty = the
default model), so the
servicer knows nothing of shards. A request for another shard's model, CreateModel
included, ends with FAILED_PRECONDITION naming the owner, so a misrouted call can never
create or change a second copy of a model. A stream is checked message by message: the
messages before a refused one are answered, then the stream ends with the refusal.
Methods whose request names no model (ListModels), health and reflection pass.

Slot moves (service/sharding/moves.py) add two twists. A model this shard does not own but
holds *in transit* (frozen to move away, or imported before the switch: `transit`) is
UNAVAILABLE, with the reason, not FAILED_PRECONDITION: the router's map and the shards'
tables switch at slightly different moments, and a caller that meets a stale one retries.
And `ImportModel` and `ReleaseModel` are the other way round: they are refused
(FAILED_PRECONDITION) on a shard that owns the model's slot, so an import never makes a
second writable copy and a release never removes the owner's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from service.server.transport.health import API_SERVICE
from service.sharding.placement import ShardPlacement

_MODEL_FIELDS = ("model", "name")
# methods for a model whose slot this shard does not own (not yet, or no more): slot moves
UNOWNED_METHODS = frozenset(f"/{API_SERVICE}/{m}" for m in ("ImportModel", "ReleaseModel"))


def model_field(message: Any) -> str | None:
    """The field of a request message that names its model; None if it names none."""
    fields = message.DESCRIPTOR.fields_by_name
    return next((f for f in _MODEL_FIELDS if f in fields), None)


def model_name(message: Any) -> str | None:
    """The model a request message names (a `Model` field names it by its `name`)."""
    field = model_field(message)
    if field is None:
        return None
    value = getattr(message, field)
    return value if isinstance(value, str) else value.name


class OwnershipInterceptor(grpc.ServerInterceptor):
    """Refuses calls of `hebbian.v1.HebbianService` for models `placement` does not own."""

    def __init__(self, placement: ShardPlacement,
                 transit: Callable[[str], str | None] | None = None):
        self._placement = placement
        self._transit = transit or (lambda name: None)

    def intercept_service(self, continuation, handler_call_details):
        """The handler, wrapped to check the model of each request message."""
        handler = continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(f"/{API_SERVICE}/"):
            return handler
        if handler_call_details.method in UNOWNED_METHODS:
            return grpc.unary_unary_rpc_method_handler(
                self._checked_unowned(handler.unary_unary, handler_call_details.method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._checked_stream(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if not handler.request_streaming and not handler.response_streaming:
            return grpc.unary_unary_rpc_method_handler(
                self._checked_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # the API has no other kinds of method

    def _why_not(self, request: Any) -> tuple[grpc.StatusCode, str] | None:
        name = model_name(request)
        why = None if name is None else self._placement.refusal(name)
        if why is None:
            return None
        moving = self._transit(name)
        if moving is not None:
            return grpc.StatusCode.UNAVAILABLE, moving
        return grpc.StatusCode.FAILED_PRECONDITION, why

    def _checked_unary(self, behavior: Callable) -> Callable:
        def handle(request, context: grpc.ServicerContext):
            why = self._why_not(request)
            if why is not None:
                context.abort(*why)
            return behavior(request, context)

        return handle

    def _checked_unowned(self, behavior: Callable, method: str) -> Callable:
        def handle(request, context: grpc.ServicerContext):
            name = request.name or self._placement.default_model
            if self._placement.owns(name):
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, (
                    f"{method.rsplit('/', 1)[-1]} refused: the slot table gives model "
                    f"{name!r} (slot {self._placement.slot(name)}) to this shard "
                    f"({self._placement.shard}); a model is imported before the table gives "
                    "its slot to the new shard, and released after it no longer gives it to "
                    "the old one"))
            return behavior(request, context)

        return handle

    def _checked_stream(self, behavior: Callable) -> Callable:
        def handle(requests: Iterator, context: grpc.ServicerContext):
            refused: list[tuple[grpc.StatusCode, str]] = []

            def owned_requests() -> Iterator:
                for request in requests:
                    why = self._why_not(request)
                    if why is not None:
                        refused.append(why)
                        return  # the input ends here: earlier messages are still answered
                    yield request

            yield from behavior(owned_requests(), context)
            if refused:
                context.abort(*refused[0])

        return handle
