"""The gRPC server object of a `ServerConfig`: thread pool, concurrency cap and options.

`HebbianServer` builds its server here, and so does the benchmark's bare echo server
(`service.bench.echo`), so that the benchmark's baseline runs on exactly the same
transport settings. This module does not import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent import futures

import grpc

from service.server.config import ServerConfig
from service.server.security import protection
from service.thread_names import name_this_thread


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """Channel arguments: message size limits, no shared ports, keepalive enforcement."""
    size = config.limits.max_message_bytes
    return [
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.so_reuseport", 0),  # a port in use is an error, not a shared port
        *protection.channel_options(config),
    ]


def grpc_server(
    config: ServerConfig, interceptors: Sequence[grpc.ServerInterceptor] = ()
) -> grpc.Server:
    """A sync gRPC server with `config.workers` threads; each RPC (a stream too) holds one,
    and calls beyond that are refused with RESOURCE_EXHAUSTED rather than queued."""
    return grpc.server(
        futures.ThreadPoolExecutor(config.workers, thread_name_prefix="grpc-worker",
                                   initializer=name_this_thread, initargs=("rpc-handler",)),
        interceptors=list(interceptors),
        options=server_options(config),
        maximum_concurrent_rpcs=config.workers,
    )
