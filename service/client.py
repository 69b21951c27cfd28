"""Python client of the Hebbian service (`hebbian.v1.HebbianService`).

Samples travel as raw little-endian float32 bytes (`Tensor.raw`), the fast encoding;
activations come back the same way. Every failure surfaces as `HebbianError` (with
the gRPC status code and the server's message); an unreachable server raises its
subclass `ServerUnavailableError` after at most `connect_timeout` seconds.

    with HebbianClient("127.0.0.1:50051") as client:
        y = client.process(np.random.rand(8, 16))            # (8, 4) activations; learns
        for result in client.stream_full(batches, model="default"):
            print(result.step, result.activations.shape)

This module imports neither TensorFlow nor the server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from service.api import hebbian_pb2, hebbian_pb2_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
_LITTLE_F32 = np.dtype("<f4")


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


@dataclass(frozen=True)
class ProcessResult:
    """One answer of Process or of one StreamProcess message.

    `activations` has shape (n, output_width), or (output_width,) when the samples
    were sent as a single 1-D sample. `skipped` lists the learning samples whose
    update would have made a weight non-finite (not applied).
    """

    activations: np.ndarray
    step: int
    model: str
    request_id: str
    skipped: tuple[int, ...]


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


def encode_samples(samples: Any) -> hebbian_pb2.Tensor:
    """A (n, width) or (width,) array-like as a raw little-endian float32 `Tensor`."""
    array = np.ascontiguousarray(samples, dtype=_LITTLE_F32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"samples must be 1-D or 2-D; got shape {array.shape}")
    return hebbian_pb2.Tensor(shape=list(array.shape), raw=array.tobytes())


def decode_tensor(tensor: hebbian_pb2.Tensor) -> np.ndarray:
    """A `Tensor` (raw or values) as a float32 numpy array of its shape."""
    if tensor.raw:
        array = np.frombuffer(tensor.raw, dtype=_LITTLE_F32).astype(np.float32)
    else:
        array = np.asarray(tensor.values, dtype=np.float32)
    shape = tuple(tensor.shape) or (array.size,)
    return array.reshape(shape)


_LAYER_FIELDS = {field.name: field for field in hebbian_pb2.LayerConfig.DESCRIPTOR.fields}


def config_to_proto(config: Any) -> hebbian_pb2.ModelConfig:
    """A model config as `ModelConfig`.

    Accepts `{"input_dim": int, "layers": [{"units": 4, "rule": "sanger", ...}, ...]}`
    (the `StackConfig.to_dict()` form), a `StackConfig`, or a `ModelConfig`. Layer keys
    are the `Hebbian` layer's arguments; None values are left unset. A key the API
    does not carry raises ValueError naming it.
    """
    if isinstance(config, hebbian_pb2.ModelConfig):
        return config
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, Mapping) or "input_dim" not in config or "layers" not in config:
        raise ValueError("a model config needs input_dim and layers")
    proto = hebbian_pb2.ModelConfig(input_dim=int(config["input_dim"]),
                                    engine=config.get("engine") or "")
    for index, layer in enumerate(config["layers"]):
        message = proto.layers.add()
        for key, value in dict(layer).items():
            if key not in _LAYER_FIELDS:
                raise ValueError(f"layer {index}: setting {key!r} is not part of the API")
            if value is not None:
                setattr(message, key, value)
    return proto


def config_from_proto(proto: hebbian_pb2.ModelConfig) -> dict:
    """Inverse of `config_to_proto`: only the settings the message sets."""
    layers = []
    for message in proto.layers:
        layer = {}
        for name, field in _LAYER_FIELDS.items():
            value = getattr(message, name)
            if field.has_presence:
                if message.HasField(name):
                    layer[name] = value
            elif value:
                layer[name] = value
        layers.append(layer)
    config = {"input_dim": int(proto.input_dim), "layers": layers}
    if proto.engine:
        config["engine"] = proto.engine
    return config


class HebbianClient:
    """A connection to one Hebbian server.

    Args:
      target: "host:port" of the server.
      timeout: deadline in seconds of every unary call (None: none).
      credentials: `grpc.ChannelCredentials` for TLS (see `tls_credentials`); None uses
        a plaintext channel.
      metadata: (key, value) pairs sent with every call.
      token: bearer token, sent as `authorization: Bearer <token>` with every call.
      connect_timeout: how long the first call waits for a connection before it
        raises `ServerUnavailableError` (a refused connection fails at once).
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        token: str | None = None,
        connect_timeout: float = 5.0,
    ):
        self.target = target
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._metadata = tuple(metadata or ())
        if token:
            self._metadata += (("authorization", f"Bearer {token}"),)
        options = [("grpc.max_receive_message_length", -1)]  # the server bounds its answers
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = hebbian_pb2_grpc.HebbianServiceStub(self._channel)
        self._connected = False

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
            reason = (
                f"no answer within {timeout:g} s"
                if not done.is_set()
                else "connection refused or failed"
            )
            raise ServerUnavailableError(self.target, reason)
        self._connected = True

    def _call(self, method: Any, request: Any) -> Any:
        if not self._connected:
            self.connect()
        try:
            return method(
                request, timeout=self.timeout, metadata=self._metadata, wait_for_ready=False
            )
        except grpc.RpcError as error:
            raise HebbianError.from_rpc_error(error, self.target) from None

    # -- samples ----------------------------------------------------------------------

    def process_full(
        self, samples: Any, *, learn: bool = True, model: str = "", request_id: str = ""
    ) -> ProcessResult:
        """Sends samples to `model` (empty: the default); returns activations and step.

        With `learn=False` the samples are inference only and the state is untouched.
        """
        request = hebbian_pb2.ProcessRequest(
            model=model, samples=encode_samples(samples), learn=learn, request_id=request_id
        )
        response = self._call(self._stub.Process, request)
        return _result(response, single=np.ndim(samples) == 1)

    def process(
        self, samples: Any, learn: bool = True, model: str = "", request_id: str = ""
    ) -> np.ndarray:
        """Activations of `samples` ((n, width) -> (n, out); (width,) -> (out,))."""
        result = self.process_full(samples, learn=learn, model=model, request_id=request_id)
        return result.activations

    def stream_full(
        self,
        batches: Iterable[Any],
        *,
        model: str = "",
        learn: bool = True,
        window: int | None = None,
        id_prefix: str | None = None,
    ) -> Iterator[ProcessResult]:
        """Streams `batches` (each (n, width) or (width,)) over one StreamProcess call.

        Yields one `ProcessResult` per batch, in order, as the server answers; the
        request id of batch i is "<id_prefix>:<i>", with a fresh random prefix unless
        one is given (the server answers a repeated id of a model with its first answer,
        without applying it again, so resending a stream with the same prefix after a
        failure is safe). `window` bounds the batches sent but not yet
        answered (None: only gRPC flow control bounds them, so the server may be far
        ahead of the answers read so far). Stopping the iteration cancels the stream.
        """
        if not self._connected:
            self.connect()
        singles: list[bool] = []
        prefix = id_prefix if id_prefix is not None else uuid.uuid4().hex[:16]
        slots = threading.Semaphore(window) if window else None
        finished = threading.Event()

        def requests() -> Iterator[hebbian_pb2.StreamProcessRequest]:
            for index, batch in enumerate(batches):
                while slots is not None and not slots.acquire(timeout=0.1):
                    if finished.is_set():
                        return
                singles.append(np.ndim(batch) == 1)
                yield hebbian_pb2.StreamProcessRequest(
                    model=model, samples=encode_samples(batch), learn=learn,
                    request_id=f"{prefix}:{index}",
                )

        call = self._stub.StreamProcess(requests(), metadata=self._metadata, wait_for_ready=False)
        try:
            for index, response in enumerate(call):
                if slots is not None:
                    slots.release()
                yield _result(response, single=singles[index])
        except grpc.RpcError as error:
            raise HebbianError.from_rpc_error(error, self.target) from None
        finally:
            finished.set()
            call.cancel()

    def stream(
        self, batches: Iterable[Any], model: str = "", learn: bool = True
    ) -> Iterator[np.ndarray]:
        """Like `stream_full`, yielding only the activations of each batch."""
        for result in self.stream_full(batches, model=model, learn=learn):
            yield result.activations

    # -- models -----------------------------------------------------------------------

    def create_model(self, name: str, config: Any) -> hebbian_pb2.Model:
        """Creates a model; `config` as accepted by `config_to_proto`."""
        request = hebbian_pb2.CreateModelRequest(name=name, config=config_to_proto(config))
        return self._call(self._stub.CreateModel, request).model

    def get_model(self, name: str = "") -> hebbian_pb2.Model:
        """A model's config, step and live statistics (empty name: the default model)."""
        return self._call(self._stub.GetModel, hebbian_pb2.GetModelRequest(name=name)).model

    def list_models(self) -> list[hebbian_pb2.Model]:
        """Every model, sorted by name."""
        return list(self._call(self._stub.ListModels, hebbian_pb2.ListModelsRequest()).models)

    def delete_model(self, name: str) -> None:
        """Deletes a model and its state."""
        self._call(self._stub.DeleteModel, hebbian_pb2.DeleteModelRequest(name=name))

    def reset(self, name: str = "", seed: int | None = None) -> hebbian_pb2.Model:
        """Re-initialises a model's weights (new `seed`, or each layer's own); step -> 0."""
        request = hebbian_pb2.ResetRequest(name=name)
        if seed is not None:
            request.seed = int(seed)
        return self._call(self._stub.Reset, request).model

    def snapshot(self, name: str = "", include_weights: bool = False):
        """Persists a model's state now; returns the `SnapshotResponse` (with each layer's
        full state when `include_weights`)."""
        request = hebbian_pb2.SnapshotRequest(name=name, include_weights=include_weights)
        return self._call(self._stub.Snapshot, request)

    def list_snapshots(self, name: str = "") -> list[hebbian_pb2.SnapshotInfo]:
        """A model's kept snapshots, oldest first."""
        request = hebbian_pb2.ListSnapshotsRequest(name=name)
        return list(self._call(self._stub.ListSnapshots, request).snapshots)

    def restore(self, snapshot_id: str, name: str = "") -> hebbian_pb2.Model:
        """Returns a model to the state of one of its snapshots."""
        request = hebbian_pb2.RestoreRequest(name=name, snapshot_id=snapshot_id)
        return self._call(self._stub.Restore, request).model


def _result(response: Any, *, single: bool) -> ProcessResult:
    activations = decode_tensor(response.activations)
    if single and activations.ndim == 2 and activations.shape[0] == 1:
        activations = activations[0]
    return ProcessResult(
        activations=activations,
        step=int(response.step),
        model=response.model,
        request_id=response.request_id,
        skipped=tuple(int(i) for i in response.skipped_samples),
    )
