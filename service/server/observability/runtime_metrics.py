"""Prometheus gauges of the running server outside the request path, read at scrape time.

- ``hebbian_ready``: 1 while the readiness health status is SERVING, else 0;
- ``hebbian_memory_limit_bytes``: the memory limit of the server's container (its cgroup,
  v2 ``memory.max`` or v1 ``memory.limit_in_bytes``), absent when there is none, so an
  alert can compare ``process_resident_memory_bytes`` with the limit the pod really has;
- ``hebbian_disk_full``: 1 while a model's write-ahead log refuses writes for lack of
  space (learning refused, reads served), else 0;

and of the data directory (`DataDirCollector`):

- ``hebbian_snapshot_last_timestamp_seconds{model}``: when the newest snapshot of the
  model was written (Unix time; absent while the model has none);
- ``hebbian_snapshots{model}``: snapshots kept;
- ``hebbian_wal_bytes{model}`` and ``hebbian_wal_segments{model}``: the model's
  write-ahead log, which shrinks each time a snapshot covers it;
- ``hebbian_data_dir_available_bytes`` and ``hebbian_data_dir_capacity_bytes``: the
  volume holding the data directory.

A scrape only lists directories and stats files (nothing is opened), so it never
contends with the models' writers; a file that disappears meanwhile (a pruned snapshot, a
dropped log segment) is simply not counted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.state.snapshot import list_snapshots
from service.state.store import DataDir
from service.state.wal import segment_paths

# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit value
_V1_UNLIMITED = 2**62


def memory_limit_bytes(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this process's cgroup in bytes, or None without one.

    Reads cgroup v2 ``memory.max`` ("max" = none), else cgroup v1
    ``memory/memory.limit_in_bytes``; inside a container both show the container's own
    cgroup at the root of the mount.
    """
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= _V1_UNLIMITED:
            return None
        return int(text)
    return None


class MemoryLimitCollector(Collector):
    """``hebbian_memory_limit_bytes``, read from the cgroup files at every scrape."""

    def __init__(self, root: Path = Path("/sys/fs/cgroup")):
        self._root = root

    def describe(self) -> Iterator[Metric]:
        return iter([self._family()])

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        limit = memory_limit_bytes(self._root)
        if limit is not None:
            family.add_metric((), limit)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "hebbian_memory_limit_bytes",
            "Memory limit of the server's container (cgroup); absent without a limit.",
        )


def register_readiness(registry: CollectorRegistry, ready: threading.Event) -> None:
    """Export ``hebbian_ready``: 1 while `ready` is set (readiness SERVING), else 0."""
    gauge = Gauge(
        "hebbian_ready",
        "1 while the server is ready (models warmed up, disk not full, not shutting down), "
        "else 0.",
        registry=registry,
    )
    gauge.set_function(lambda: 1.0 if ready.is_set() else 0.0)


def register_disk_full(registry: CollectorRegistry, full: Callable[[], bool]) -> None:
    """Export ``hebbian_disk_full``: 1 while `full()` (learning refused for lack of space)."""
    gauge = Gauge(
        "hebbian_disk_full",
        "1 while a write-ahead log refuses writes for lack of space (learning refused, "
        "reads served), else 0.",
        registry=registry,
    )
    gauge.set_function(lambda: 1.0 if full() else 0.0)


class DataDirCollector(Collector):
    """Snapshot and log gauges of every model stored in `data_dir`."""

    def __init__(self, data_dir: DataDir):
        self._data_dir = data_dir

    def describe(self) -> Iterator[Metric]:
        return iter(_families().values())

    def collect(self) -> Iterator[Metric]:
        families = _families()
        for name in self._safe_model_names():
            directory = self._data_dir.models_dir / name
            snapshots = _stats(list_snapshots(directory / "snapshots"))
            segments = _stats(segment_paths(directory / "wal"))
            if snapshots:
                newest = max(stat.st_mtime for stat in snapshots)
                families["snapshot_time"].add_metric((name,), newest)
            families["snapshots"].add_metric((name,), len(snapshots))
            families["wal_bytes"].add_metric((name,), sum(stat.st_size for stat in segments))
            families["wal_segments"].add_metric((name,), len(segments))
        try:
            stat = os.statvfs(self._data_dir.root)
        except OSError:
            pass
        else:
            families["available"].add_metric((), stat.f_bavail * stat.f_frsize)
            families["capacity"].add_metric((), stat.f_blocks * stat.f_frsize)
        yield from families.values()

    def _safe_model_names(self) -> list[str]:
        try:
            return self._data_dir.model_names()
        except OSError:
            return []


def _families() -> dict[str, GaugeMetricFamily]:
    model = ("model",)
    return {
        "snapshot_time": GaugeMetricFamily(
            "hebbian_snapshot_last_timestamp_seconds",
            "Unix time the newest snapshot of the model was written.", labels=model),
        "snapshots": GaugeMetricFamily(
            "hebbian_snapshots", "Snapshots kept for the model.", labels=model),
        "wal_bytes": GaugeMetricFamily(
            "hebbian_wal_bytes",
            "Bytes in the model's write-ahead log segments (drops after each snapshot).",
            labels=model),
        "wal_segments": GaugeMetricFamily(
            "hebbian_wal_segments", "Segment files of the model's write-ahead log.",
            labels=model),
        "available": GaugeMetricFamily(
            "hebbian_data_dir_available_bytes",
            "Bytes available to the server on the data directory's file system."),
        "capacity": GaugeMetricFamily(
            "hebbian_data_dir_capacity_bytes", "Size of the data directory's file system."),
    }


def _stats(paths: list[Path]) -> list[os.stat_result]:
    """`stat` of each path that still exists."""
    found = []
    for path in paths:
        try:
            found.append(path.stat())
        except FileNotFoundError:
            continue
    return found
