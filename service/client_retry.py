"""What the Python clients resend on their own: gRPC's retry policy, as a service config.

gRPC retries a call itself, with exponential backoff, when the channel's service config
has a `retryPolicy` for its method and the call ends with one of the policy's codes.
Only calls that are safe to send twice get one, and only for UNAVAILABLE (the server
restarting, a connection reset, a GOAWAY):

- the reads `GetModel`, `GetModelState`, `ListModels`, `ListSnapshots`: they change nothing;
- `Process`: inference (`learn=False`) changes nothing; a learning call always carries a
  request id (the clients make a random one unless the caller passes one), and the
  server answers a request id it already acknowledged with its first answer instead of
  applying the samples again, so a resend after a lost answer is exactly once.

Not retried: `CreateModel` and `DeleteModel` (a resend after a lost answer would fail with
ALREADY_EXISTS or NOT_FOUND although the call worked), `Reset`, `Restore` and `Snapshot`
(they would be done twice, after whatever samples arrived in between), and
`StreamProcess`: gRPC retries a stream only until its first answer arrives, so it cannot
resume a long stream; the clients' stream helpers do that themselves, resending the
unanswered messages with their request ids (`service.client_resume`).
"""

from __future__ import annotations

import json

SERVICE = "hebbian.v1.HebbianService"
RETRIED_METHODS = ("GetModel", "GetModelState", "ListModels", "ListSnapshots", "Process")
MAX_ATTEMPTS = 5  # gRPC caps maxAttempts at 5
INITIAL_BACKOFF_S = 0.2
MAX_BACKOFF_S = 2.0


def service_config() -> str:
    """The channel's service config (JSON): the retry policy of `RETRIED_METHODS`."""
    return json.dumps({
        "methodConfig": [{
            "name": [{"service": SERVICE, "method": method} for method in RETRIED_METHODS],
            "retryPolicy": {
                "maxAttempts": MAX_ATTEMPTS,
                "initialBackoff": f"{INITIAL_BACKOFF_S}s",
                "maxBackoff": f"{MAX_BACKOFF_S}s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }],
    })


def channel_options() -> list[tuple[str, object]]:
    """Options of every client channel: retries on, the retry policy, no receive limit."""
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config()),
        ("grpc.max_receive_message_length", -1),  # the server bounds its answers
    ]
