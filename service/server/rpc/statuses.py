"""The one table from the service's domain errors to gRPC status codes."""

from __future__ import annotations

import grpc

from service.errors import (
    CallCancelledError,
    DataLossError,
    DeadlinePassedError,
    DomainError,
    FailedPreconditionError,
    InternalError,
    InvalidInputError,
    LimitExceededError,
    ModelExistsError,
    ModelNotFoundError,
    NotFoundError,
    OverloadedError,
    UnavailableError,
)

STATUS_CODES: dict[type[DomainError], grpc.StatusCode] = {
    InvalidInputError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFoundError: grpc.StatusCode.NOT_FOUND,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    ModelExistsError: grpc.StatusCode.ALREADY_EXISTS,
    LimitExceededError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    # the request waited for room until its deadline: the caller's deadline is what ended it
    OverloadedError: grpc.StatusCode.DEADLINE_EXCEEDED,
    DeadlinePassedError: grpc.StatusCode.DEADLINE_EXCEEDED,
    CallCancelledError: grpc.StatusCode.CANCELLED,
    FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    DataLossError: grpc.StatusCode.DATA_LOSS,
    InternalError: grpc.StatusCode.INTERNAL,
}


def status_code(error: DomainError) -> grpc.StatusCode:
    """The status code a domain error is answered with (its nearest class in the table)."""
    for cls in type(error).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL
