"""Python client of the Hebbian service (`hebbian.v1.HebbianService`).

Samples travel as raw little-endian float32 bytes (`Tensor.raw`, `service.codec`),
the fast encoding; activations come back the same way. Every failure surfaces as
`HebbianError` (with the gRPC status code and the server's message); an unreachable
server raises its subclass `ServerUnavailableError` after at most `connect_timeout`
seconds.

    with HebbianClient("127.0.0.1:50051") as client:
        y = client.process(np.random.rand(8, 16))            # (8, 4) activations; learns
        y1 = client.learn_one(x)                             # one sample, learns
        p = client.predict_one(x)                            # one sample, inference only
        for result in client.stream_full(batches, model="default"):
            print(result.step, result.activations.shape)

Surviving a restart of the server: reads and `Process` calls are resent by gRPC's own
retry policy on UNAVAILABLE (`service.client_retry`; every learning Process call carries
a request id, so a resend is applied once), and once connected, calls wait for a restarting server
(`wait_for_ready`) within their deadline. `stream_full` resumes a broken stream on a new
call, resending the unanswered messages with their request ids (`service.client_resume`).
`AsyncHebbianClient` (`service.client_aio`) has the same surface for asyncio.

Every call names its model in the header `x-hebbian-model` too (not sent for the default
model), which is what the router of a sharded deployment routes by.

This module imports neither TensorFlow nor the server.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import field_mask_pb2

from service.api import hebbian_pb2, hebbian_pb2_grpc
from service.client_resume import Message, Outbox, Reconnect, StreamOutOfOrderError, resumable
from service.client_retry import channel_options
from service.codec.answers import ProcessResult, process_result  # re-exported: public names
from service.codec.configs import config_from_proto, config_to_proto
from service.codec.model_state import ModelState, layer_states_to_proto, model_state
from service.codec.tensors import decode_tensor, encode_samples

__all__ = [
    "DEFAULT_TARGET", "MODEL_HEADER", "ClientSurface", "HebbianClient", "HebbianError",
    "ModelState", "ProcessResult", "ServerUnavailableError", "config_from_proto",
    "config_to_proto", "decode_tensor", "encode_samples", "process_result", "tls_credentials",
]

DEFAULT_TARGET = "127.0.0.1:50051"


class HebbianError(Exception):
    """A call to the server failed: `code` is the gRPC status, `details` its message."""

    def __init__(self, code: grpc.StatusCode | None, details: str):
        super().__init__(details)
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}" if self.code else self.details

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, target: str) -> HebbianError:
        """Wraps a `grpc.RpcError`; UNAVAILABLE becomes `ServerUnavailableError`."""
        code = error.code() if hasattr(error, "code") else None
        details = (error.details() if hasattr(error, "details") else None) or str(code)
        if code == grpc.StatusCode.UNAVAILABLE:
            return ServerUnavailableError(target, details)
        return cls(code, details)


class ServerUnavailableError(HebbianError):
    """The server cannot be reached (not running, wrong address, or not answering)."""

    def __init__(self, target: str, reason: str):
        super().__init__(
            grpc.StatusCode.UNAVAILABLE, f"cannot reach the Hebbian server at {target} ({reason})"
        )
        self.target = target

    def __str__(self) -> str:
        return self.details


def tls_credentials(
    ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> grpc.ChannelCredentials:
    """TLS channel credentials from PEM files.

    Args:
      ca: CA bundle that signed the server's certificate (None: the system's roots).
      cert, key: this client's certificate and private key, for servers that require
        mutual TLS (both or neither).

    Raises:
      ValueError: only one of `cert` and `key`, or a file that cannot be read.
    """
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its key: give both --cert and --key")

    def read(path: str | Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as error:
            raise ValueError(f"cannot read {path}: {error.strerror}") from None

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert)
    )


def new_request_id() -> str:
    """A random request id (the clients give one to every learning Process call without
    one)."""
    return uuid.uuid4().hex


def process_request(
    samples: Any, *, learn: bool, model: str, request_id: str
) -> hebbian_pb2.ProcessRequest:
    """The `ProcessRequest` of `samples`; a learning request without an id gets a fresh
    one, so that a resend is applied once (inference changes nothing: no id needed)."""
    return hebbian_pb2.ProcessRequest(
        model=model, samples=encode_samples(samples), learn=learn,
        request_id=request_id or (new_request_id() if learn else ""),
    )


def stream_messages(
    batches: Iterable[Any], *, model: str, learn: bool, prefix: str
) -> Iterator[Message]:
    """The messages of a stream: batch i gets the request id "<prefix>:<i>"."""
    for index, batch in enumerate(batches):
        yield stream_message(index, batch, model=model, learn=learn, prefix=prefix)


def stream_message(index: int, batch: Any, *, model: str, learn: bool, prefix: str) -> Message:
    """Message number `index` of a stream, with the request id "<prefix>:<index>"."""
    request_id = f"{prefix}:{index}"
    request = hebbian_pb2.StreamProcessRequest(
        model=model, samples=encode_samples(batch), learn=learn, request_id=request_id
    )
    return Message(request, request_id, np.ndim(batch) == 1)


def new_stream_prefix() -> str:
    """A random prefix for a stream's request ids."""
    return uuid.uuid4().hex[:16]


def auth_metadata(
    metadata: Sequence[tuple[str, str]] | None, token: str | None
) -> tuple[tuple[str, str], ...]:
    """The metadata sent with every call: `metadata`, plus the bearer token if any."""
    pairs = tuple(metadata or ())
    return pairs + ((("authorization", f"Bearer {token}"),) if token else ())


MODEL_HEADER = "x-hebbian-model"  # what a sharded deployment's router routes by


def model_metadata(
    metadata: tuple[tuple[str, str], ...], model: str
) -> tuple[tuple[str, str], ...]:
    """`metadata` plus `x-hebbian-model: MODEL`, the header a router routes by; without
    a model name (the server's default model), or with one no header can carry (not a
    valid model name anyway: the server refuses it), nothing is added."""
    sendable = model and model.isascii() and model.isprintable()
    return metadata + (((MODEL_HEADER, model),) if sendable else ())


def request_model(request: Any) -> str:
    """The model a request message names (its `model` or `name` field; "" if none)."""
    return str(getattr(request, "model", "") or getattr(request, "name", "") or "")


class ClientSurface:
    """The unary methods both clients share, written once.

    Each builds its request and hands it to `_unary(method, request, extract)`, which the
    blocking client runs at once (returning `extract(response)`) and the asyncio client
    returns as a coroutine (awaiting gives `extract(response)`). The constructor (arguments
    as `HebbianClient`'s) is shared too: `_channels` is the module whose channels a client
    uses (`grpc` or `grpc.aio`).
    """

    _channels: Any = grpc

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        token: str | None = None,
        connect_timeout: float = 5.0,
        wait_for_ready: bool | None = None,
        reconnect_timeout: float = 120.0,
    ):
        self.target = target
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.wait_for_ready = wait_for_ready
        self.reconnect_timeout = reconnect_timeout
        self._metadata = auth_metadata(metadata, token)
        options = channel_options()
        if credentials is None:
            self._channel = self._channels.insecure_channel(target, options=options)
        else:
            self._channel = self._channels.secure_channel(target, credentials, options=options)
        self._stub = hebbian_pb2_grpc.HebbianServiceStub(self._channel)
        self._connected = False

    def _unary(self, method: str, request: Any, extract: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    # -- samples ----------------------------------------------------------------------

    def process_full(
        self, samples: Any, *, learn: bool = True, model: str = "", request_id: str = ""
    ) -> ProcessResult:
        """Sends samples to `model` (empty: the default); returns activations and step.

        With `learn=False` the samples are inference only and the state is untouched.
        Without a `request_id` a learning call gets a random one, so that gRPC's retry
        policy can resend it safely (the server applies an id once).
        """
        request = process_request(samples, learn=learn, model=model, request_id=request_id)
        single = np.ndim(samples) == 1
        return self._unary("Process", request, lambda r: process_result(r, single=single))

    def process(
        self, samples: Any, learn: bool = True, model: str = "", request_id: str = ""
    ) -> np.ndarray:
        """Activations of `samples` ((n, width) -> (n, out); (width,) -> (out,))."""
        request = process_request(samples, learn=learn, model=model, request_id=request_id)
        single = np.ndim(samples) == 1
        return self._unary(
            "Process", request, lambda r: process_result(r, single=single).activations
        )

    def learn_one(self, x: Any, model: str = "", request_id: str = "") -> np.ndarray:
        """Learns from one sample `x` (width,): the model's state is updated.

        Returns the sample's activations (out,), computed with the weights as they were
        when it arrived (River's `learn_one`, which returns nothing, plus the answer the
        server gives anyway).
        """
        return self.process(_one(x), learn=True, model=model, request_id=request_id)

    def predict_one(self, x: Any, model: str = "") -> np.ndarray:
        """Activations (out,) of one sample `x` (width,), inference only: the state is
        untouched."""
        return self.process(_one(x), learn=False, model=model)

    # -- models -----------------------------------------------------------------------

    def create_model(self, name: str, config: Any, state: Any = None) -> hebbian_pb2.Model:
        """Creates a model; `config` as accepted by `config_to_proto`.

        `state` (optional) is the state it starts from, in the flat layout
        {"layer{i}.{field}": array} (`ModelState.arrays`, a `.npz` weights file); the
        server checks it against the config like any input.
        """
        request = hebbian_pb2.CreateModelRequest(name=name, config=config_to_proto(config))
        if state is not None:
            request.layers.extend(layer_states_to_proto(state))
        return self._unary("CreateModel", request, lambda r: r.model)

    # -- slot moves (admin; `hebbian shards move`, service/sharding/moves.py) ----------------

    def export_model(self, name: str, to_shard: int) -> hebbian_pb2.ExportModelResponse:
        """Freezes a model (writes UNAVAILABLE) and returns its config and snapshot bytes."""
        request = hebbian_pb2.ExportModelRequest(name=name, to_shard=to_shard)
        return self._unary("ExportModel", request, lambda r: r)

    def import_model(self, exported: hebbian_pb2.ExportModelResponse,
                     from_shard: int) -> hebbian_pb2.Model:
        """Creates an exported model on this (the target) shard."""
        request = hebbian_pb2.ImportModelRequest(
            name=exported.name, config=exported.config, snapshot=exported.snapshot,
            from_shard=from_shard)
        return self._unary("ImportModel", request, lambda r: r.model)

    def unfreeze_model(self, name: str) -> hebbian_pb2.Model:
        """A frozen model takes writes again (a move given up)."""
        request = hebbian_pb2.UnfreezeModelRequest(name=name)
        return self._unary("UnfreezeModel", request, lambda r: r.model)

    def release_model(self, name: str) -> None:
        """Removes a model in transit from a shard that does not own its slot."""
        return self._unary("ReleaseModel", hebbian_pb2.ReleaseModelRequest(name=name),
                           lambda r: None)

    def get_model_state(self, name: str = "") -> ModelState:
        """A model's config, step and every layer's arrays, read between batches; the
        server writes nothing (no snapshot)."""
        request = hebbian_pb2.GetModelStateRequest(name=name)
        return self._unary("GetModelState", request, model_state)

    def update_model(
        self, name: str = "", *, layers: Sequence[dict] | None = None, **settings: float
    ) -> hebbian_pb2.Model:
        """Changes learning-rate and schedule settings, keeping the learned state.

        `settings` (e.g. ``learning_rate=0.002``) apply to every layer; `layers` gives one
        dict per layer instead (an empty dict keeps that layer as it is). Only
        learning_rate, decay_steps, lateral_learning_rate and bcm_threshold_rate change;
        the server refuses anything else with INVALID_ARGUMENT naming it.
        """
        if (layers is None) == (not settings):
            raise ValueError("give the new settings either as keywords or as layers=[...]")
        entries = [settings] if layers is None else list(layers)
        paths = sorted({f"config.layers.{key}" for entry in entries for key in entry})
        request = hebbian_pb2.UpdateModelRequest(
            model=hebbian_pb2.Model(name=name, config=hebbian_pb2.ModelConfig(
                layers=[hebbian_pb2.LayerConfig(**entry) for entry in entries])),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
        return self._unary("UpdateModel", request, lambda r: r.model)

    def get_model(self, name: str = "") -> hebbian_pb2.Model:
        """A model's config, step and live statistics (empty name: the default model)."""
        return self._unary("GetModel", hebbian_pb2.GetModelRequest(name=name), lambda r: r.model)

    def list_models(self) -> list[hebbian_pb2.Model]:
        """Every model, sorted by name."""
        return self._unary(
            "ListModels", hebbian_pb2.ListModelsRequest(), lambda r: list(r.models)
        )

    def delete_model(self, name: str) -> None:
        """Deletes a model and its state."""
        return self._unary(
            "DeleteModel", hebbian_pb2.DeleteModelRequest(name=name), lambda r: None
        )

    def reset(self, name: str = "", seed: int | None = None) -> hebbian_pb2.Model:
        """Re-initialises a model's weights (new `seed`, or each layer's own); step -> 0."""
        request = hebbian_pb2.ResetRequest(name=name)
        if seed is not None:
            request.seed = int(seed)
        return self._unary("Reset", request, lambda r: r.model)

    def snapshot(self, name: str = "", include_weights: bool = False) -> Any:
        """Persists a model's state now; returns the `SnapshotResponse` (with each layer's
        full state when `include_weights`)."""
        request = hebbian_pb2.SnapshotRequest(name=name, include_weights=include_weights)
        return self._unary("Snapshot", request, lambda r: r)

    def list_snapshots(self, name: str = "") -> list[hebbian_pb2.SnapshotInfo]:
        """A model's kept snapshots, oldest first."""
        request = hebbian_pb2.ListSnapshotsRequest(name=name)
        return self._unary("ListSnapshots", request, lambda r: list(r.snapshots))

    def restore(self, snapshot_id: str, name: str = "") -> hebbian_pb2.Model:
        """Returns a model to the state of one of its snapshots."""
        request = hebbian_pb2.RestoreRequest(name=name, snapshot_id=snapshot_id)
        return self._unary("Restore", request, lambda r: r.model)


def _one(x: Any) -> np.ndarray:
    sample = np.asarray(x, dtype=np.float32)
    if sample.ndim != 1:
        raise ValueError(f"one sample is 1-D (width,); got shape {sample.shape}")
    return sample


class HebbianClient(ClientSurface):
    """A connection to one Hebbian server (blocking calls).

    Args:
      target: "host:port" of the server.
      timeout: deadline in seconds of every unary call (None: none).
      credentials: `grpc.ChannelCredentials` for TLS (see `tls_credentials`); None uses
        a plaintext channel.
      metadata: (key, value) pairs sent with every call.
      token: bearer token, sent as `authorization: Bearer <token>` with every call.
      connect_timeout: how long the first call waits for a connection before it
        raises `ServerUnavailableError` (a refused connection fails at once).
      wait_for_ready: whether a call waits for an unreachable server to come back (within
        its deadline) instead of failing at once with UNAVAILABLE. None (default): not
        before the first connection (a wrong address fails fast), always after it (a
        restarting server is waited for).
      reconnect_timeout: how long `stream_full` keeps trying to resume a broken stream
        without getting an answer before it raises `ServerUnavailableError`.
    """

    # -- connection -------------------------------------------------------------------

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> HebbianClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def connect(self, timeout: float | None = None) -> None:
        """Waits until the channel is connected; raises `ServerUnavailableError` if it fails.

        A refused connection fails at once; an address that does not answer fails
        after `timeout` (default `connect_timeout`) seconds.
        """
        timeout = self.connect_timeout if timeout is None else timeout
        done = threading.Event()
        outcome: list[grpc.ChannelConnectivity] = []  # the first READY/failure state seen
        final = {
            grpc.ChannelConnectivity.READY,
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.SHUTDOWN,
        }

        def on_change(state: grpc.ChannelConnectivity) -> None:
            if state in final and not done.is_set():
                outcome.append(state)
                done.set()

        self._channel.subscribe(on_change, try_to_connect=True)
        try:
            done.wait(timeout)
        finally:
            self._channel.unsubscribe(on_change)
        if outcome[:1] != [grpc.ChannelConnectivity.READY]:
            raise ServerUnavailableError(self.target, connect_failure(done.is_set(), timeout))
        self._connected = True

    def _ensure_connected(self) -> bool:
        """Connects first unless calls wait anyway; returns the calls' `wait_for_ready`."""
        if self.wait_for_ready is None and not self._connected:
            self.connect()
        return self.wait_for_ready is not False

    def _unary(self, method: str, request: Any, extract: Callable[[Any], Any]) -> Any:
        wait = self._ensure_connected()
        try:
            response = getattr(self._stub, method)(
                request, timeout=self.timeout, wait_for_ready=wait,
                metadata=model_metadata(self._metadata, request_model(request)),
            )
        except grpc.RpcError as error:
            raise HebbianError.from_rpc_error(error, self.target) from None
        return extract(response)

    # -- streams ----------------------------------------------------------------------

    def stream_full(
        self,
        batches: Iterable[Any],
        *,
        model: str = "",
        learn: bool = True,
        window: int | None = None,
        id_prefix: str | None = None,
        resume: bool = True,
    ) -> Iterator[ProcessResult]:
        """Streams `batches` (each (n, width) or (width,)) over StreamProcess.

        Yields one `ProcessResult` per batch, in order, as the server answers; the
        request id of batch i is "<id_prefix>:<i>", with a fresh random prefix unless
        one is given. `window` bounds the batches sent but not yet answered (None: only
        gRPC flow control bounds them, so the server may be far ahead of the answers read
        so far). Stopping the iteration cancels the stream.

        With `resume` (default), a stream broken by UNAVAILABLE (the server restarted,
        the connection dropped) goes on over a new call: the unanswered batches are sent
        again with their request ids, and the server answers the ones it had already
        applied with their first answers, so every batch is applied and yielded exactly
        once. It gives up with `ServerUnavailableError` after `reconnect_timeout` seconds
        without an answer. An exception raised by `batches` ends the stream after the
        answers to the batches before it, then propagates.
        """
        self._ensure_connected()
        prefix = id_prefix if id_prefix is not None else new_stream_prefix()
        outbox = Outbox(stream_messages(batches, model=model, learn=learn, prefix=prefix), window)
        reconnect = Reconnect(
            self.reconnect_timeout, lambda why: ServerUnavailableError(self.target, why)
        )
        while True:
            attempt = outbox.attempt()
            call = self._stub.StreamProcess(
                outbox.requests(attempt), metadata=model_metadata(self._metadata, model),
                wait_for_ready=self.wait_for_ready is not False or reconnect.attempts > 0,
            )
            try:
                for response in call:
                    message = outbox.answer(response.request_id)
                    reconnect.progress()
                    yield process_result(response, single=message.single)
                outbox.finish()
                return
            except grpc.RpcError as error:
                if not (resume and resumable(error.code(), error.details())):
                    raise HebbianError.from_rpc_error(error, self.target) from None
                reason = error.details() or "UNAVAILABLE"
            except StreamOutOfOrderError as error:
                raise HebbianError(grpc.StatusCode.INTERNAL, str(error)) from None
            finally:
                attempt.close()
                call.cancel()
            time.sleep(reconnect.backoff(reason))
            try:  # the new call waits for the server; this bounds how long
                grpc.channel_ready_future(self._channel).result(timeout=reconnect.remaining())
            except grpc.FutureTimeoutError:
                raise reconnect.gave_up(reason) from None

    def stream(
        self, batches: Iterable[Any], model: str = "", learn: bool = True
    ) -> Iterator[np.ndarray]:
        """Like `stream_full`, yielding only the activations of each batch."""
        for result in self.stream_full(batches, model=model, learn=learn):
            yield result.activations


def connect_failure(answered: bool, timeout: float) -> str:
    """Why connecting failed: refused (`answered`) or no answer within `timeout`."""
    return "connection refused or failed" if answered else f"no answer within {timeout:g} s"
