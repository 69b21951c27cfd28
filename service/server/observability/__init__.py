"""What the server shows operators: `metrics` (the registry and its /metrics endpoint),
`grpc_metrics` (``grpc_server_*`` for every method), `model_metrics` (per-model and
per-layer series), `runtime_metrics` (readiness, data-directory gauges), `logs`."""
