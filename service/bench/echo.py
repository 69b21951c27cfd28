"""A bare gRPC echo server: the baseline the service benchmark compares against.

It serves `hebbian.v1.HebbianService/Process` and `/StreamProcess` through a generic
handler on the same transport as the real server with its default settings
(`service.server.transport.grpc_server`: thread pool, maximum concurrent RPCs, message
size limits, keepalive) and no interceptors (no metrics, no auth), with the same protobuf
(de)serialisers, and answers every request with a response of the size the real
server would send: `n x output_dim` raw float32 activations (zeros) for a request of `n`
samples, plus step, request id and model name. No validation, no queue, no model: what
is left is what gRPC in Python itself costs per message.

    python -m service.bench.echo --port 50060 --output-dim 64

Runs until SIGTERM or SIGINT. This module does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator

import grpc

from service.api import hebbian_pb2 as pb
from service.server.config import ServerConfig
from service.server.transport.grpc_server import grpc_server

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


def start_echo(host: str, port: int, output_dim: int) -> tuple[grpc.Server, int]:
    """Start an echo server with the real server's default workers and limits;
    returns it and its bound port."""
    defaults = ServerConfig()
    server = grpc_server(defaults)
    echo = Echo(output_dim, defaults.limits.max_message_bytes)
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
    args = parser.parse_args(argv)
    server, port = start_echo(args.host, args.port, args.output_dim)
    print(f"echo serving on {args.host}:{port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
