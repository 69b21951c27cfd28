"""How the server is protected, from its `ServerConfig`: TLS, tokens, limits.

- `interceptors`: token auth (when tokens are configured) and the stream cap;
- `channel_options`: keepalive enforcement, added to the transport's options;
- `bind`: the gRPC port, plaintext or TLS, mutual TLS with a client CA (a client
  without a certificate signed by that CA fails the TLS handshake: it never reaches
  gRPC, and its call ends UNAVAILABLE);
- `posture`: log lines that say what is on and what is off, never a secret.

Plaintext without tokens stays the default for local use, and says so at start.
"""

from __future__ import annotations

import grpc

from service.server.config import ConfigError, ServerConfig
from service.server.security.auth import AuthInterceptor
from service.server.security.tokens import ADMIN, PROCESS
from service.server.transport.limits import StreamLimiter, keepalive_options


def interceptors(config: ServerConfig) -> list[grpc.ServerInterceptor]:
    """Auth (first: an unauthenticated caller takes no stream slot), then the stream cap."""
    chain: list[grpc.ServerInterceptor] = []
    if config.tokens.enabled:
        chain.append(AuthInterceptor(config.tokens))
    chain.append(StreamLimiter(config.limits.max_streams))
    return chain


def channel_options(config: ServerConfig) -> list[tuple[str, int]]:
    """Keepalive enforcement from the limits."""
    limits = config.limits
    return keepalive_options(
        limits.keepalive_time, limits.keepalive_timeout, limits.min_ping_interval
    )


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the configured PEM files; None for plaintext.

    Raises:
      ConfigError: a file cannot be read or is not PEM.
    """
    if config.tls_cert is None:
        return None
    cert, key = _pem(config.tls_cert, "tls_cert"), _pem(config.tls_key, "tls_key")
    client_ca = _pem(config.tls_client_ca, "tls_client_ca") if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Add the gRPC port, TLS with `credentials` (None: plaintext); the bound port, 0 if
    binding failed."""
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError:
        return 0


def posture(config: ServerConfig) -> list[str]:
    """What protects the server, one line each, for the start-up log (no secrets)."""
    if config.tls_cert is None:
        transport = "plaintext gRPC (no TLS): use only on a trusted network or localhost"
    elif config.tls_client_ca is None:
        transport = f"TLS with certificate {config.tls_cert}; client certificates not required"
    else:
        transport = (
            f"mutual TLS with certificate {config.tls_cert}; clients need a certificate "
            f"signed by {config.tls_client_ca}"
        )
    tokens = config.tokens
    if tokens.enabled:
        auth = (
            f"token auth on: {tokens.count(ADMIN)} admin and {tokens.count(PROCESS)} process "
            "token(s); health checks exempt"
        )
    else:
        auth = "token auth off (no tokens configured): every caller may call every method"
    limits = config.limits
    caps = (
        f"limits: {limits.max_streams} streams, {config.workers} workers, "
        f"{limits.max_models} models, {limits.max_samples_per_request} samples and "
        f"{limits.max_message_bytes} bytes per message"
    )
    return [transport, auth, caps]


def warnings(config: ServerConfig) -> list[str]:
    """Settings that weaken the limits, for the start-up log."""
    found = []
    if config.token_file is not None and not config.tokens.enabled:
        found.append(f"token file {config.token_file} holds no token: authentication is off")
    if config.limits.max_streams >= config.workers:
        found.append(
            f"limits.max_streams ({config.limits.max_streams}) >= workers ({config.workers}): "
            "open streams can take every worker thread and starve unary calls"
        )
    return found


def _pem(path, setting: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {setting} file {path}: {err.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{setting} file {path} is not a PEM file")
    return data
