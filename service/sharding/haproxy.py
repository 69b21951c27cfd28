"""The router's files, rendered from the slot table: HAProxy's map and its config.

HAProxy passes gRPC through over HTTP/2 cleartext (`bind ... proto h2`, `server ...
proto h2`) and picks the backend of each call by its `x-hebbian-model` header:

    req.hdr(x-hebbian-model),crc32,mod(1024)  ->  slot  ->  slots.map  ->  shard-N

`crc32` without an argument is the standard CRC-32 (Python's `zlib.crc32`); `crc32(1)`
would add an avalanche step and disagree with the servers. A call without the header (or
with an empty one) is the default model's, and is routed by that model's name. The map
has one line per slot (`SLOT shard-N`), so a table change is a new map file (or `set
map` on HAProxy's runtime API) and never a new config.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.sharding.slot_table import SlotTable
from service.sharding.slots import MODEL_HEADER, SLOT_COUNT

MAP_FILE = "/usr/local/etc/haproxy/slots.map"  # where the official image's config lives
SLOT_EXPRESSION = f"req.hdr({MODEL_HEADER}),crc32,mod({SLOT_COUNT})"


def backend_name(shard: int) -> str:
    """HAProxy's backend (and server) name of shard `shard`."""
    return f"shard-{shard}"


def render_map(table: SlotTable) -> str:
    """The map file: `SLOT shard-N` for every slot, in order."""
    lines = ["# slot -> backend, rendered from the slot table (hebbian shards render-haproxy)"]
    lines += [f"{slot} {backend_name(table.owner(slot))}" for slot in range(SLOT_COUNT)]
    return "\n".join(lines) + "\n"


def render_config(
    servers: Mapping[int, str],
    *,
    default_model: str = "default",
    bind: str = ":50051",
    map_file: str = MAP_FILE,
    dns: bool = False,
    stats_bind: str | None = None,
    stream_timeout: str = "1h",
    maxconn: int = 4000,
    admin_socket: str | None = None,
) -> str:
    """haproxy.cfg routing gRPC by model to `servers` (shard ordinal -> host:port).

    Args:
      servers: every shard's address; with `dns`, names resolved at run time (StatefulSet
        pod names: a pod that does not exist yet leaves its server down, not HAProxy).
      default_model: the model a call without the header is routed as.
      bind: the frontend's address.
      map_file: where HAProxy reads the map of `render_map`.
      stats_bind: address of a plain HTTP frontend answering `/healthz` (the router's own
        probes); None: none.
      stream_timeout: how long a stream may stay idle, each way, before HAProxy ends it.
      maxconn: most client connections at once (HAProxy needs two file descriptors each).
      admin_socket: where HAProxy's runtime API listens (a unix socket path, or
        `ipv4@HOST:PORT`), at level admin, so that `hebbian shards move` can change the
        map in place (`set map`); None: none.
    """
    if not servers:
        raise ValueError("the router needs at least one shard")
    resolve = " resolvers dns init-addr last,libc,none" if dns else ""
    lines = [
        "# HAProxy: the gRPC router of a sharded hebbian-service (hebbian shards "
        "render-haproxy).",
        "# Routes each call by its x-hebbian-model header: slot = crc32 of the name mod "
        f"{SLOT_COUNT},",
        f"# slot -> shard by {map_file} (rendered from the slot table).",
        "global",
        "    log stdout format raw local0 info",
        f"    maxconn {maxconn}",
        *([f"    stats socket {admin_socket} mode 600 level admin"] if admin_socket else []),
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        "    timeout connect 5s",
        f"    timeout client {stream_timeout}",
        f"    timeout server {stream_timeout}",
        "    timeout http-request 30s",
        "",
    ]
    if dns:
        lines += [
            "resolvers dns",
            "    parse-resolv-conf",
            "    hold valid 10s",
            "    hold nx 2s",
            "",
        ]
    if stats_bind is not None:
        lines += [
            "frontend health",
            f"    bind {stats_bind}",
            "    http-request return status 200 content-type text/plain string ok "
            "if { path /healthz }",
            "    http-request deny",
            "",
        ]
    default_backend = "shard-unknown"
    lines += [
        "frontend grpc",
        f"    bind {bind} proto h2",
        f"    http-request set-var(txn.model) req.hdr({MODEL_HEADER})",
        f"    http-request set-var(txn.model) str({default_model}) "
        "unless { var(txn.model) -m len gt 0 }",
        f"    http-request set-var(txn.backend) var(txn.model),crc32,mod({SLOT_COUNT}),"
        f"map_int({map_file})",
        "    use_backend %[var(txn.backend)]",
        f"    default_backend {default_backend}",
        "",
        f"backend {default_backend}",
        "    # a map without the slot (never, for a rendered map): the caller retries",
        "    http-request return status 503",
        "",
    ]
    for shard in sorted(servers):
        name = backend_name(shard)
        lines += [
            f"backend {name}",
            f"    server {name} {servers[shard]} proto h2 check inter 1s fall 2 rise 1"
            f"{resolve}",
            "",
        ]
    return "\n".join(lines)
