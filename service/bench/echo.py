"""A bare gRPC echo server: the baseline the service benchmark compares against.

It serves `hebbian.v1.HebbianService/Process` and `/StreamProcess` through a generic
handler on the same transport as the real server with its default settings
(`service.server.transport.grpc_server`: thread pool, maximum concurrent RPCs, message
size limits, keepalive) and no interceptors (no metrics, no auth), with the same protobuf
(de)serialisers, and answers every request with a response of the size the real
server would send: `n x output_dim` raw float32 activations (zeros) for a request of `n`
samples, plus step, request id and model name. No validation, no queue, no model: what
is left is what gRPC in Python itself costs per message.

    python -m service.bench.echo --port 50060 --output-dim 64 [--work echo|engine|logged]

`--work` makes it a *floor* server for `hebbian bench floor`: besides answering, each
message gets the least of the service's own work, with the service's own code:

- `engine`: one engine call (`NativeEngine.process`, a 256 -> 64 `oja` model by default)
  on the message's raw samples, its activations and step in the answer;
- `logged`: the samples validated first (`decode_samples`, as the service parses them)
  and one write-ahead log record written (`records.encode_batch`, `os.write` to a
  temporary file, fsync `no`) before the engine call.

What each adds over the echo is the cheapest any design keeping gRPC Python's handler can
be; the service adds exactly-once ids, the model's queue, accounting and metrics on top.

Runs until SIGTERM or SIGINT. This module does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np

from service.api import hebbian_pb2 as pb
from service.codec.tensors import decode_samples
from service.server.config import ServerConfig
from service.server.transport.grpc_server import grpc_server
from service.state.records import encode_batch

SERVICE = "hebbian.v1.HebbianService"


class Echo:
    """Answers like a model with `output_dim` outputs, without computing anything."""

    def __init__(self, output_dim: int, max_message_bytes: int):
        self.output_dim = output_dim
        self.step = 0
        self._zeros = bytes(max_message_bytes)

    def _fields(self, request: pb.ProcessRequest | pb.StreamProcessRequest) -> dict:
        shape = request.samples.shape
        n = shape[0] if len(shape) == 2 else 1
        self.step += n  # a plain counter; races between streams do not matter here
        return {
            "activations": pb.Tensor(
                shape=(n, self.output_dim), raw=self._zeros[: 4 * n * self.output_dim]
            ),
            "step": self.step,
            "request_id": request.request_id,
            "model": request.model or "default",
        }

    def process(self, request: pb.ProcessRequest, context) -> pb.ProcessResponse:
        """Unary: one response per request."""
        return pb.ProcessResponse(**self._fields(request))

    def stream_process(
        self, requests: Iterator[pb.StreamProcessRequest], context
    ) -> Iterator[pb.StreamProcessResponse]:
        """Bidirectional: one response per message, in order."""
        for request in requests:
            yield pb.StreamProcessResponse(**self._fields(request))

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler serving both methods."""
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Process": grpc.unary_unary_rpc_method_handler(
                self.process,
                request_deserializer=pb.ProcessRequest.FromString,
                response_serializer=pb.ProcessResponse.SerializeToString,
            ),
            "StreamProcess": grpc.stream_stream_rpc_method_handler(
                self.stream_process,
                request_deserializer=pb.StreamProcessRequest.FromString,
                response_serializer=pb.StreamProcessResponse.SerializeToString,
            ),
        })


class FloorEcho(Echo):
    """The echo plus the least of the service's work per message (see the module doc).

    Args:
      output_dim: the model's outputs; input_dim: its inputs.
      max_message_bytes: the message size limit (bounds the samples per message).
      log_directory: where the `logged` floor writes its log; None: no log, no validation.
    """

    def __init__(self, output_dim: int, max_message_bytes: int, input_dim: int,
                 log_directory: Path | None = None):
        from service.model.stack import HebbianStack, StackConfig  # numba, not TensorFlow

        super().__init__(output_dim, max_message_bytes)
        config = {"input_dim": input_dim,
                  "layers": [{"units": output_dim, "rule": "oja", "seed": 0}]}
        self.input_dim = input_dim
        self._engine = HebbianStack(StackConfig.from_dict(config)).engine
        self._max_samples = min(max_message_bytes // (4 * input_dim), len(_LEARN))
        self._lock = threading.Lock()  # one writer at a time, as in the service
        self._seq = 0
        self._log = None if log_directory is None else os.open(
            log_directory / "floor.wal", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def _fields(self, request: pb.ProcessRequest | pb.StreamProcessRequest) -> dict:
        if self._log is None:
            samples = np.frombuffer(request.samples.raw, np.float32).reshape(-1, self.input_dim)
        else:
            samples = decode_samples(request.samples, self.input_dim, self._max_samples)
        with self._lock:
            if self._log is not None:
                self._seq += 1
                os.write(self._log, encode_batch(self._seq, samples, _LEARN[: len(samples)]))
            result = self._engine.process(samples, True)
        return {
            "activations": pb.Tensor(shape=result.activations.shape,
                                     raw=result.activations.tobytes()),
            "step": result.step,
            "request_id": request.request_id,
            "model": request.model or "default",
        }


_LEARN = np.ones(1 << 16, np.bool_)  # learn flags of any message, as a view

WORKS = ("echo", "engine", "logged")


def start_echo(host: str, port: int, output_dim: int, work: str = "echo",
               input_dim: int = 256,
               log_directory: Path | None = None) -> tuple[grpc.Server, int]:
    """Start an echo server (or a floor server, `work`: see the module doc) with the real
    server's default workers and limits; returns it and its bound port."""
    defaults = ServerConfig()
    server = grpc_server(defaults)
    if work == "echo":
        echo = Echo(output_dim, defaults.limits.max_message_bytes)
    else:
        echo = FloorEcho(output_dim, defaults.limits.max_message_bytes, input_dim,
                         log_directory if work == "logged" else None)
    server.add_generic_rpc_handlers((echo.handler(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise RuntimeError(f"cannot listen on {host}:{port}")
    server.start()
    return server, bound


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m service.bench.echo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--output-dim", type=int, default=64, help="activations per sample")
    parser.add_argument("--input-dim", type=int, default=256,
                        help="samples' width (the floor servers' model)")
    parser.add_argument("--work", choices=WORKS, default="echo",
                        help="what each message costs besides the answer (default: nothing)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hebbian-floor-") as log_directory:
        server, port = start_echo(args.host, args.port, args.output_dim, args.work,
                                  args.input_dim, Path(log_directory))
        print(f"echo ({args.work}) serving on {args.host}:{port}", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        server.stop(1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
