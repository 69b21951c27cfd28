"""The gRPC server, one subpackage per concern; the modules here are its wiring.

- `core`: the model core (sessions, combining, the registry, bounds, names): no gRPC.
- `rpc`: the API layer: the servicer (parse, delegate, answer), sample requests, the
  stream pipeline, UpdateModel's mask, the one table of domain errors -> status codes.
- `transport`: the gRPC server object and its options, keepalive and stream limits,
  health, the health-probe port, reflection.
- `security`: token auth, the tokens file, TLS and the interceptor chain.
- `observability`: Prometheus metrics (gRPC interceptor, model series, runtime gauges)
  and logs.
- `config` (the server's settings), `runtime` (`HebbianServer`: builds and runs it all)
  and `app` (`hebbian serve`: flags, signals): the wiring.

The message translation shared with the client is `service.codec`.
"""
