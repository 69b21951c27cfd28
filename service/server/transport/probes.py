"""A plaintext port that serves only `grpc.health.v1.Health`, for kubelet probes.

When the main port requires mutual TLS, a kubelet gRPC probe (which has no client
certificate) cannot complete the handshake. `--health-port` opens this second port:
the same health statuses (liveness, readiness, overall), nothing else (every other
method is UNIMPLEMENTED there), a few threads and tiny messages. Bind it where only the
kubelet reaches it (the pod network, a NetworkPolicy).
"""

from __future__ import annotations

from concurrent import futures

import grpc

from service.server.transport.health import Health

_WORKERS = 4
_MAX_MESSAGE_BYTES = 4096


class HealthPort:
    """The health-only gRPC server; `start` it on a port, `stop` it after the main one."""

    def __init__(self, health: Health):
        self._server = grpc.server(
            futures.ThreadPoolExecutor(_WORKERS, thread_name_prefix="health-port"),
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=_WORKERS,
        )
        health.add_to_server(self._server)
        self.port = 0

    def start(self, address: str) -> int:
        """Bind `address` (host:port, port 0 = free) and serve; the bound port, 0 on failure."""
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port:
            self._server.start()
        return self.port

    def stop(self) -> None:
        """Stop serving at once (probes are answered until the main server is gone)."""
        self._server.stop(None).wait()
