"""The service's domain errors: what a request can run into, without any transport.

The model core, the codec and the state layer raise these; the gRPC servicer maps each
class to one status code in one table (`service.server.rpc.statuses`), and the Python
client raises the same classes for what it refuses before sending. Every message is
written for the caller (what is wrong, what was expected); inputs are quoted with
`service.server.core.bounds.quote`, and a message longer than `MAX_MESSAGE_CHARS` is cut,
because gRPC carries it in trailers of limited size.
"""

from __future__ import annotations

MAX_MESSAGE_CHARS = 2000


class DomainError(Exception):
    """A request the service refuses or could not serve; nothing was changed.

    Args:
      message: what went wrong, for the caller.
      reason: short machine-readable cause for the rejected-samples metric
        (e.g. "wrong_width"); None when no samples are rejected.
      samples: how many samples the refused request carried (best estimate).
    """

    def __init__(self, message: str, reason: str | None = None, samples: int = 0):
        if len(message) > MAX_MESSAGE_CHARS:
            message = f"{message[:MAX_MESSAGE_CHARS]}... (message truncated)"
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.samples = samples


class InvalidInputError(DomainError, ValueError):
    """The request itself is wrong (a bad width, NaN, a bad name or config, ...)."""


class ModelNotFoundError(DomainError):
    """No model of that name (or it is being deleted)."""


class ModelExistsError(DomainError):
    """A model of that name exists already."""


class NotFoundError(DomainError):
    """Something a request names does not exist (e.g. a snapshot id)."""


class LimitExceededError(DomainError):
    """The request is over a configured size limit (samples, layers, models, bytes)."""


class OverloadedError(DomainError):
    """The model stayed too busy to take the request within its deadline."""


class DeadlinePassedError(DomainError):
    """The caller's deadline passed before the request was applied; nothing was applied."""


class CallCancelledError(DomainError):
    """The call ended before its samples were applied; nothing was applied."""


class FailedPreconditionError(DomainError):
    """The request cannot run in the model's or server's current state
    (e.g. deleting the default model, restoring without a data directory)."""


class UnavailableError(DomainError):
    """Could not be made durable now (e.g. a full disk); retrying later may work."""


class DataLossError(DomainError):
    """Stored data needed for the request is damaged."""


class InternalError(DomainError):
    """A bug or an unexpected failure inside the service."""


class ModelMovingError(UnavailableError):
    """The model is being moved to another shard: it takes no writes meanwhile; retrying
    (through the router) reaches it on its new shard once the move is done."""
