"""`hebbian.v1.HebbianService`: parse the request, delegate, answer.

The work happens elsewhere: `tensors` decodes and validates samples, the `registry`
finds models, each model's `Learner` applies samples. A `ServiceError` raised on the
way becomes the call's status (`context.abort`), so a refused request changes nothing.
"""

# ruff: noqa: N802  (method names are the RPC names of the proto)

from __future__ import annotations

import functools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future

import grpc

from service.api import hebbian_pb2 as pb
from service.api import hebbian_pb2_grpc as pb_grpc
from service.server import bounds, messages, state_input, tensors, update_request
from service.server.errors import ServiceError, invalid
from service.server.learner import Learner, Outcome
from service.server.registry import ModelRegistry

log = logging.getLogger(__name__)

# Messages of one stream read and queued ahead of the answers being sent: a stream's
# messages reach the learner while earlier ones are still being answered. Bounded in
# messages and in sample bytes (one message always fits, however large).
STREAM_WINDOW = 64
STREAM_WINDOW_BYTES = 4 << 20
# Bytes of a response besides activations, skipped indices and id (model, shape, framing).
_RESPONSE_OVERHEAD = 1024
_END = object()

Request = pb.ProcessRequest | pb.StreamProcessRequest


def _statuses(method: Callable) -> Callable:
    """Turn a `ServiceError` raised by a unary method into the call's status."""

    @functools.wraps(method)
    def handler(self, request, context: grpc.ServicerContext):
        try:
            return method(self, request, context)
        except ServiceError as err:
            context.abort(err.code, err.message)

    return handler


class HebbianServicer(pb_grpc.HebbianServiceServicer):
    """The API service over a `ModelRegistry`.

    Args:
      registry: the server's models.
      max_samples_per_request: more samples in one request or stream message are
        refused with RESOURCE_EXHAUSTED.
      max_message_bytes: the server's message size limit; a request whose activations
        would not fit in a response is refused with RESOURCE_EXHAUSTED before it runs.
    """

    def __init__(
        self, registry: ModelRegistry, max_samples_per_request: int, max_message_bytes: int
    ):
        self._registry = registry
        self._max_samples = max_samples_per_request
        self._max_message_bytes = max_message_bytes

    # -- learning and inference ------------------------------------------------------

    @_statuses
    def Process(self, request: pb.ProcessRequest, context) -> pb.ProcessResponse:
        """Apply one request's samples and return their activations."""
        learner, future = self._submit(request, context.time_remaining())
        if not context.add_callback(future.cancel):  # the call ended early: withdraw it
            future.cancel()
        return pb.ProcessResponse(**_answer(request, learner, _result(future)))

    def StreamProcess(
        self, requests: Iterator[pb.StreamProcessRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.StreamProcessResponse]:
        """Answer each message of a stream in order; a bad message ends the stream."""
        window = _StreamWindow(STREAM_WINDOW, STREAM_WINDOW_BYTES)
        if not context.add_callback(window.withdraw):  # cancelled: withdraw what is queued
            return
        reader = threading.Thread(
            target=self._read_stream, args=(requests, window), daemon=True, name="stream-reader"
        )
        reader.start()
        try:
            while (item := window.get()) is not _END:
                if isinstance(item, ServiceError):
                    context.abort(item.code, item.message)
                request, learner, future = item
                try:
                    outcome = _result(future)
                except ServiceError as err:
                    context.abort(err.code, err.message)
                yield pb.StreamProcessResponse(**_answer(request, learner, outcome))
        finally:
            window.close()

    def _read_stream(self, requests: Iterator, window: _StreamWindow):
        """Reader thread of one stream: validate and submit messages as they arrive."""
        try:
            for request in requests:
                if window.closed:
                    return
                learner, future = self._submit(request, None)
                window.put((request, learner, future), _request_bytes(request))
        except ServiceError as err:
            window.put(err)
        except grpc.RpcError:  # the client went away; the handler ends with the call
            pass
        except Exception as err:
            log.exception("stream reader failed")
            window.put(ServiceError(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}"))
        finally:
            window.put(_END)

    def _submit(self, request: Request, timeout: float | None) -> tuple[Learner, Future]:
        learner = self._registry.get(request.model)
        try:
            bounds.check_request_id(request.request_id)
            samples = tensors.decode_samples(request.samples, learner.input_dim, self._max_samples)
        except ServiceError as err:
            learner.reject(err.reason or "invalid", err.samples)
            raise
        # worst case: 4 bytes per activation, a 5-byte skipped index per sample, the id
        largest = len(samples) * (4 * learner.output_dim + 5) + len(request.request_id)
        if largest + _RESPONSE_OVERHEAD > self._max_message_bytes:
            learner.reject("too_large_response", len(samples))
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the activations of {len(samples)} samples ({learner.output_dim} per sample) "
                "would exceed the message size limit; send fewer samples per request",
            )
        learn = request.learn if request.HasField("learn") else True
        return learner, learner.submit(samples, learn, timeout, request.request_id)

    # -- model management ------------------------------------------------------------

    @_statuses
    def CreateModel(self, request: pb.CreateModelRequest, context) -> pb.CreateModelResponse:
        """Create a named model from its layer-stack config."""
        config = messages.config_from_proto(request.config)
        initial = None
        if request.layers:  # the model starts from the given state, validated as input
            initial = functools.partial(state_input.decode_states, request.layers)
        learner = self._registry.create(request.name, config, initial_state=initial)
        return pb.CreateModelResponse(model=messages.model_to_proto(learner.status()))

    @_statuses
    def GetModelState(
        self, request: pb.GetModelStateRequest, context
    ) -> pb.GetModelStateResponse:
        """A model's full state, read between batches; writes nothing."""
        learner = self._registry.get(request.name)
        return messages.model_state_to_proto(_result(learner.model_state()))

    @_statuses
    def UpdateModel(self, request: pb.UpdateModelRequest, context) -> pb.UpdateModelResponse:
        """Change a model's learning-rate and schedule settings, keeping its state."""
        learner = self._registry.get(request.model.name)
        changes = update_request.layer_changes(request, len(learner.stack.params))
        status = _result(learner.update(changes))
        return pb.UpdateModelResponse(model=messages.model_to_proto(status))

    @_statuses
    def GetModel(self, request: pb.GetModelRequest, context) -> pb.GetModelResponse:
        """A model's config, counters and live statistics."""
        learner = self._registry.get(request.name)
        return pb.GetModelResponse(model=messages.model_to_proto(learner.status()))

    @_statuses
    def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        """Every model, sorted by name."""
        models = [messages.model_to_proto(learner.status()) for learner in self._registry.list()]
        return pb.ListModelsResponse(models=models)

    @_statuses
    def DeleteModel(self, request: pb.DeleteModelRequest, context) -> pb.DeleteModelResponse:
        """Delete a model once its queued requests are done."""
        self._registry.delete(request.name)
        return pb.DeleteModelResponse()

    @_statuses
    def Reset(self, request: pb.ResetRequest, context) -> pb.ResetResponse:
        """Re-initialise a model's weights (after the requests queued before it)."""
        learner = self._registry.get(request.name)
        seed = request.seed if request.HasField("seed") else None
        if seed is not None:
            bounds.check_reset_seed(seed, len(learner.stack.params))
        status = _result(learner.reset(seed))
        return pb.ResetResponse(model=messages.model_to_proto(status))

    @_statuses
    def Snapshot(self, request: pb.SnapshotRequest, context) -> pb.SnapshotResponse:
        """Persist a model's state now (after its queued requests); optionally return it."""
        learner = self._registry.get(request.name)
        info, arrays = _result(learner.snapshot())
        layers = []
        if request.include_weights:
            for index in range(len(learner.stack.params)):
                state = {field: arrays[f"layer{index}.{field}"]
                         for field in ("kernel", "lateral", "mask", "theta")}
                layers.append(pb.LayerState(
                    **{field: tensors.encode(value, raw=False) for field, value in state.items()},
                    step=int(arrays[f"layer{index}.step"]),
                ))
        return pb.SnapshotResponse(snapshot=messages.snapshot_to_proto(info), layers=layers)

    @_statuses
    def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, context
    ) -> pb.ListSnapshotsResponse:
        """A model's kept snapshots, oldest first."""
        learner = self._registry.get(request.name)
        snapshots = learner.store.list_snapshots() if learner.store is not None else []
        return pb.ListSnapshotsResponse(snapshots=map(messages.snapshot_to_proto, snapshots))

    @_statuses
    def Restore(self, request: pb.RestoreRequest, context) -> pb.RestoreResponse:
        """Return a model to the state of one of its snapshots (after its queued requests)."""
        learner = self._registry.get(request.name)
        if not request.snapshot_id:
            raise invalid("Restore needs a snapshot_id (see ListSnapshots)")
        status = _result(learner.restore(request.snapshot_id))
        return pb.RestoreResponse(model=messages.model_to_proto(status))


class _StreamWindow:
    """The messages of one stream submitted to a learner and not answered yet, in order
    and bounded in count and bytes: the reader thread `put`s, the handler `get`s.
    `withdraw` (run when the call ends, e.g. the client cancelled or went away) cancels
    the futures the learner has not started, so a cancelled stream's queued samples are
    never applied."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self._size, self._max_bytes = size, max_bytes
        self._items: deque[tuple[object, int]] = deque()
        self._bytes = 0
        self._changed = threading.Condition()
        self._awaited: Future | None = None  # the handler's current message
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        """Whether the handler ended (the reader stops submitting)."""
        return self._closed.is_set()

    def put(self, item, nbytes: int = 0) -> None:
        """Queue a (request, learner, future), an error or the end; waits while the window
        is full (in messages, or in bytes unless it is empty), never once it is closed."""
        with self._changed:
            while not self._closed.is_set() and self._items and (
                len(self._items) >= self._size or self._bytes + nbytes > self._max_bytes
            ):
                self._changed.wait()
            self._items.append((item, nbytes))
            self._bytes += nbytes
            self._changed.notify_all()

    def get(self):
        """The next item, in order (waits for one)."""
        with self._changed:
            while not self._items:
                self._changed.wait()
            item, nbytes = self._items.popleft()
            self._bytes -= nbytes
            self._changed.notify_all()
        if type(item) is tuple:
            self._awaited = item[2]
        return item

    def withdraw(self) -> None:
        """Cancel every queued future the learner has not started, the awaited one too."""
        self._closed.set()
        with self._changed:
            queued = [item[2] for item, _ in self._items if type(item) is tuple]
            self._changed.notify_all()
        for future in (self._awaited, *queued):
            if future is not None:
                future.cancel()

    def close(self) -> None:
        """The handler is done: stop the reader, unblocking it if it waits for room."""
        self._closed.set()
        with self._changed:
            self._items.clear()
            self._bytes = 0
            self._changed.notify_all()


def _request_bytes(request: Request) -> int:
    """Bytes a stream message holds in the window: its samples (raw or values) and id."""
    samples = request.samples
    return len(samples.raw) + 4 * len(samples.values) + len(request.request_id)


def _result(future: Future):
    """The future's result; a non-`ServiceError` failure becomes INTERNAL."""
    try:
        return future.result()
    except ServiceError:
        raise
    except CancelledError:
        raise ServiceError(
            grpc.StatusCode.CANCELLED, "the call ended before its samples were applied"
        ) from None
    except Exception as err:
        raise ServiceError(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}") from err


def _answer(request: Request, learner: Learner, outcome: Outcome) -> dict:
    """Fields of a Process/StreamProcess response, activations encoded like the samples."""
    return {
        # `values` is a view; reading `raw` would copy the request's sample bytes again
        "activations": tensors.encode(outcome.activations, raw=not request.samples.values),
        "step": outcome.step,
        "request_id": request.request_id,
        "model": learner.name,
        "skipped_samples": outcome.skipped.tolist(),
    }
