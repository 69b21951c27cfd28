"""Bearer-token authentication and scopes for every gRPC method, unary and streaming.

A caller sends `authorization: Bearer <token>` metadata. `AuthInterceptor` checks it
before the method runs:

- no token, a malformed header or an unknown token -> UNAUTHENTICATED (one message
  for all of them, so a caller learns nothing about the configured tokens);
- a `process` token on an `admin` method -> PERMISSION_DENIED;
- `grpc.health.v1.Health` is exempt (kubelet probes carry no credentials);
- server reflection needs a `process` token: the schema is public, but an
  unauthenticated caller gets nothing from the server at all.

Methods of `hebbian.v1.HebbianService` need `admin` unless `PROCESS_METHODS` names
them, so a method added to the API is admin-only until someone decides otherwise.
Tokens are compared in constant time (`Tokens.scope_of`) and never logged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc

from service.server.security.tokens import ADMIN, PROCESS, Tokens
from service.server.transport.health import API_SERVICE

HEALTH_SERVICE = "grpc.health.v1.Health"
PROCESS_METHODS = frozenset(
    f"/{API_SERVICE}/{name}"
    for name in ("Process", "StreamProcess", "GetModel", "ListModels", "ListSnapshots")
)
UNAUTHENTICATED_MESSAGE = (
    "missing or invalid credentials: send the metadata 'authorization: Bearer <token>' "
    "with a valid token"
)


def required_scope(method: str) -> str | None:
    """The scope a full method name ("/package.Service/Method") needs; None: exempt."""
    if method.startswith(f"/{HEALTH_SERVICE}/"):
        return None
    if method.startswith(f"/{API_SERVICE}/"):
        return PROCESS if method in PROCESS_METHODS else ADMIN
    return PROCESS  # reflection and anything else the server hosts


def bearer_token(metadata: Sequence | None) -> str | None:
    """The token of the first `authorization: Bearer <token>` entry, or None."""
    for key, value in metadata or ():
        if key != "authorization":
            continue
        if isinstance(value, bytes):
            return None
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None
    return None


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls without a token of the scope their method needs.

    Args:
      tokens: the configured tokens (must not be empty: no tokens means no interceptor).
    """

    def __init__(self, tokens: Tokens):
        if not tokens.enabled:
            raise ValueError("AuthInterceptor needs at least one token")
        self._tokens = tokens

    def intercept_service(self, continuation, handler_call_details):
        """Pass the call on, or answer it with UNAUTHENTICATED / PERMISSION_DENIED."""
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        needed = required_scope(method)
        if handler is None or needed is None:
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        scope = self._tokens.scope_of(token) if token is not None else None
        if scope is None:
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        if needed == ADMIN and scope != ADMIN:
            name = method.rsplit("/", 1)[-1]
            return _refusal(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{name} needs a token with the admin scope; this token has the process scope",
            )
        return handler


def _refusal(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers `code` without running it."""

    def refuse(request, context: grpc.ServicerContext):
        context.abort(code, message)

    factory: Callable = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return factory(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
