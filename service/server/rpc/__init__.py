"""The API layer of `hebbian.v1.HebbianService`: gRPC requests in, the model core, answers out.

`servicer` (one method per RPC), `sample_requests` (a sample message -> a model's
request, an answer -> a response), `stream_pipeline` (a stream's in-flight window),
`update_request` (UpdateModel's mask and layers), `statuses` (domain errors -> codes).
"""
