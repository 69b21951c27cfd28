"""Where a running shard stands: its ordinal, the slot table in use, what it owns.

`ShardPlacement` answers "may this shard serve model NAME?" for the ownership
interceptor, and exports two gauges on the server's metrics registry:

- ``hebbian_shard_info{shard="2"}``: always 1, the shard's ordinal as a label (join it
  onto any other series of the pod, e.g. ``* on(pod) group_left(shard)``);
- ``hebbian_shard_slots_owned{shard="2"}``: how many of the 1024 slots the table in use
  gives this shard (0 after all its slots moved away).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from service.sharding.slot_table import SlotTable
from service.sharding.slots import slot_of
from service.sharding.table_watcher import SlotTableWatcher


class ShardPlacement:
    """Shard `shard` of the table that `watcher` keeps up to date.

    Args:
      shard: this process's ordinal.
      watcher: the slot table in use (reloaded when its file changes).
      default_model: the model an empty name stands for.
    """

    def __init__(self, shard: int, watcher: SlotTableWatcher, default_model: str):
        self.shard = shard
        self.watcher = watcher
        self.default_model = default_model

    @property
    def table(self) -> SlotTable:
        """The slot table in use."""
        return self.watcher.table

    def slot(self, name: str) -> int:
        """The slot of model `name` ("" = the default model)."""
        return slot_of(name, self.default_model)

    def owner(self, name: str) -> int:
        """The shard that owns model `name`."""
        return self.table.owner(self.slot(name))

    def owns(self, name: str) -> bool:
        """Whether this shard serves model `name`."""
        return self.owner(name) == self.shard

    def refusal(self, name: str) -> str | None:
        """Why this shard refuses model `name`; None when it owns it."""
        slot = self.slot(name)
        owner = self.table.owner(slot)
        if owner == self.shard:
            return None
        shown = name or self.default_model
        return (f"model {shown!r} (slot {slot}) belongs to shard {owner}, this is shard "
                f"{self.shard}; send it to shard {owner} or through the router with the "
                f"header 'x-hebbian-model: {shown}'")

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Add ``hebbian_shard_info`` and ``hebbian_shard_slots_owned`` to `registry`."""
        registry.register(_ShardCollector(self))


class _ShardCollector(Collector):
    def __init__(self, placement: ShardPlacement):
        self._placement = placement

    def collect(self) -> Iterator[Metric]:
        shard = str(self._placement.shard)
        info = GaugeMetricFamily(
            "hebbian_shard_info", "Always 1; the label says which shard this server is.",
            labels=["shard"])
        info.add_metric([shard], 1)
        owned = GaugeMetricFamily(
            "hebbian_shard_slots_owned",
            "Slots (of 1024) the slot table in use gives this shard.", labels=["shard"])
        owned.add_metric([shard], self._placement.table.slot_count(self._placement.shard))
        yield info
        yield owned
