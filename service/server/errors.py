"""The one error type the server's domain code raises: a gRPC status with a clear message."""

from __future__ import annotations

import grpc

# Longest status message sent: gRPC carries it in the trailers, whose size is limited.
MAX_MESSAGE_CHARS = 2000


class ServiceError(Exception):
    """A request the server refuses or could not serve; the servicer answers with `code`.

    Args:
      code: the gRPC status code of the answer.
      message: the status message, written for the caller (what is wrong, what was
        expected); inputs are quoted with `bounds.quote`, and a message longer than
        `MAX_MESSAGE_CHARS` is cut there.
      reason: short machine-readable cause for the rejected-samples metric
        (e.g. "wrong_width"); None when no samples are rejected.
      samples: how many samples the refused request carried (best estimate).
    """

    def __init__(
        self, code: grpc.StatusCode, message: str, reason: str | None = None, samples: int = 0
    ):
        if len(message) > MAX_MESSAGE_CHARS:
            message = f"{message[:MAX_MESSAGE_CHARS]}... (message truncated)"
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.samples = samples


def invalid(message: str, reason: str | None = None, samples: int = 0) -> ServiceError:
    """INVALID_ARGUMENT with `message`."""
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message, reason, samples)
