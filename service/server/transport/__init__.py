"""The gRPC transport: `grpc_server` (thread pool, options, concurrency cap), `limits`
(keepalive enforcement, the stream cap), `health` (grpc.health.v1 and its service names),
`probes` (the health-probe port), `reflection` (descriptors with the proto's comments)."""
