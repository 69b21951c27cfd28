"""The model core: what a served model is and does, without gRPC (a test checks it).

`registry` (the named models) -> `live_model` (one model behind its lock, combining its
callers' requests, `combining`) -> `session` (exactly-once, log, engine, accounting,
snapshots, recovery); `snapshot_timer` (snapshots in the background), `bounds` (the bound
of every API field), `names` (valid model names), `refusals` (a model that refuses most
updates). Errors are the domain errors of `service.errors`.
"""
