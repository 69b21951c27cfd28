"""The gRPC server: servicer, per-model learners, registry, health, metrics and wiring."""
