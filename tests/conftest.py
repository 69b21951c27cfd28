"""Shared test configuration: deterministic data helpers (importing `service` quiets
TensorFlow, see service/tf_noise.py)."""

