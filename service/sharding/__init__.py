"""Models sharded over several `hebbian serve` processes: placement as data.

- `slots`: a model's slot, CRC-32 of its name mod 1024 (HAProxy's `crc32(1),mod(1024)`);
- `slot_table`: slot ranges -> shard ordinal, a small YAML/JSON file every server reads;
- `ordinal`: this process's shard number, from `--shard` or the StatefulSet pod name;
- `table_watcher`: the table, reloaded when its file changes (a ConfigMap update);
- `ownership`: the server interceptor that refuses requests for other shards' models;
- `haproxy`: the router's map file, rendered from the table.

Nothing here imports TensorFlow.
"""
