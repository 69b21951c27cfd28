"""Readiness and data-directory gauges (service/server/observability/runtime_metrics.py),
read on scrape."""

from __future__ import annotations

import os
import threading

import pytest
from prometheus_client import CollectorRegistry

from service.server.observability.runtime_metrics import (
    DataDirCollector,
    MemoryLimitCollector,
    memory_limit_bytes,
    register_readiness,
)
from service.state.snapshot import SUFFIX as SNAPSHOT_SUFFIX
from service.state.store import CONFIG, DataDir
from service.state.wal import SEGMENT_SUFFIX


def test_readiness_gauge_follows_the_event():
    registry, ready = CollectorRegistry(), threading.Event()
    register_readiness(registry, ready)
    assert registry.get_sample_value("hebbian_ready") == 0.0
    ready.set()
    assert registry.get_sample_value("hebbian_ready") == 1.0


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"memory.max": "2147483648\n"}, 2**31),  # cgroup v2 with a limit
        ({"memory.max": "max\n"}, None),  # cgroup v2, unlimited
        ({"memory/memory.limit_in_bytes": "1073741824\n"}, 2**30),  # cgroup v1
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1 unlimited
        ({}, None),  # no cgroup files at all (not Linux, or not mounted)
    ],
)
def test_memory_limit_is_read_from_the_cgroup_files(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert memory_limit_bytes(tmp_path) == expected
    registry = CollectorRegistry()
    registry.register(MemoryLimitCollector(tmp_path))
    assert registry.get_sample_value("hebbian_memory_limit_bytes") == expected


def make_model(data_dir: DataDir, name: str, snapshots: dict[str, float], segments: list[int]):
    """A model directory with snapshot files (name -> mtime) and log segments of given sizes."""
    directory = data_dir.models_dir / name
    (directory / "snapshots").mkdir(parents=True)
    (directory / "wal").mkdir()
    (directory / CONFIG).write_text("{}")
    for stem, mtime in snapshots.items():
        path = directory / "snapshots" / f"{stem}{SNAPSHOT_SUFFIX}"
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
    for index, size in enumerate(segments):
        (directory / "wal" / f"{index:016d}{SEGMENT_SUFFIX}").write_bytes(b"\0" * size)


def test_data_dir_gauges_per_model(tmp_path):
    data_dir = DataDir(tmp_path)
    make_model(data_dir, "a", {"0000000000000001": 1000.0, "0000000000000009": 2000.0},
               [100, 50])
    make_model(data_dir, "fresh", {}, [])
    registry = CollectorRegistry()
    registry.register(DataDirCollector(data_dir))

    def value(name, **labels):
        return registry.get_sample_value(name, labels)

    assert value("hebbian_snapshot_last_timestamp_seconds", model="a") == 2000.0
    assert value("hebbian_snapshots", model="a") == 2
    assert value("hebbian_wal_bytes", model="a") == 150
    assert value("hebbian_wal_segments", model="a") == 2
    assert value("hebbian_snapshot_last_timestamp_seconds", model="fresh") is None
    assert value("hebbian_snapshots", model="fresh") == 0
    assert value("hebbian_wal_bytes", model="fresh") == 0
    assert value("hebbian_data_dir_capacity_bytes") > 0
    assert 0 <= value("hebbian_data_dir_available_bytes") <= value(
        "hebbian_data_dir_capacity_bytes")


def test_a_missing_data_dir_exports_no_models(tmp_path):
    registry = CollectorRegistry()
    registry.register(DataDirCollector(DataDir(tmp_path / "not-created")))
    assert registry.get_sample_value("hebbian_wal_bytes", {"model": "a"}) is None
    assert registry.get_sample_value("hebbian_data_dir_capacity_bytes") is None
