"""The wire format of `hebbian.v1`: one codec, used by the client and the server alike.

- `tensors`: `Tensor` <-> numpy; the samples of a request decoded and validated.
- `configs`: model configs <-> `ModelConfig` (unknown keys refused, float32 read back as
  its shortest decimal).
- `model_state`: a model's full state <-> `LayerState`s (and a state sent as input,
  validated).
- `answers`: a Process answer as the client reads it (`ProcessResult`).
- `models`: a model's status and a snapshot's description (the server's reports).

Refusals are the domain errors of `service.errors` (`InvalidInputError` is a ValueError).
No gRPC here and none of the server: the client imports it as it is.
"""
