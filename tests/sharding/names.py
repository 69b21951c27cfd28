"""Model names for the sharding tests, picked by the slot table (deterministic)."""

from __future__ import annotations

from service.sharding.slot_table import SlotTable
from service.sharding.slots import slot_of


def names_per_shard(table: SlotTable, per_shard: int, prefix: str = "sensor") -> dict[int, list]:
    """`per_shard` names "<prefix>-<i>" owned by each shard of `table`, first found first."""
    found: dict[int, list[str]] = {shard: [] for shard in table.shards()}
    index = 0
    while any(len(names) < per_shard for names in found.values()):
        name = f"{prefix}-{index}"
        owned = found[table.owner(slot_of(name))]
        if len(owned) < per_shard:
            owned.append(name)
        index += 1
    return found
