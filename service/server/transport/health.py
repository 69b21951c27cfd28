"""grpc.health.v1 for the server: overall (""), "liveness" and "readiness".

- "liveness": SERVING while the process can answer at all (until it stops);
- "readiness" and "" (what probes without a service name check) and the API service
  itself: NOT_SERVING until the startup models are warmed up, SERVING while the server
  takes requests, NOT_SERVING while the data directory's disk has no room for the log
  (learning refused, reads served) and again from the moment shutdown begins.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.api import hebbian_pb2

LIVENESS = "liveness"
READINESS = "readiness"
API_SERVICE = hebbian_pb2.DESCRIPTOR.services_by_name["HebbianService"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """The server's health service and its statuses."""

    def __init__(self) -> None:
        self.servicer = health.HealthServicer()
        self.servicer.set(LIVENESS, _SERVING)
        self.set_ready(False)

    def add_to_server(self, server: grpc.Server) -> None:
        """Register the health service on `server`."""
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    def set_ready(self, ready: bool) -> None:
        """Readiness (and the overall and API statuses) SERVING or NOT_SERVING."""
        status = _SERVING if ready else _NOT_SERVING
        for service in ("", READINESS, API_SERVICE):
            self.servicer.set(service, status)

    def shutdown(self) -> None:
        """Every status NOT_SERVING, liveness included; Watch streams are told and end."""
        self.servicer.enter_graceful_shutdown()
