"""The gRPC server: the model core, servicer, stream pipeline, health, metrics, wiring."""
