"""Benchmarks of the service's hot paths (run as ``python -m service.bench.<name>``)."""
